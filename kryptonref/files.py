"""Writing output files: whole or not at all, where the user asked, with the usual mode.

Every writer in kryptonref (weights, ONNX files, overlays, plots, saved heatmaps) goes
through :func:`atomic_write`, so an interrupt, a full disk or an error while drawing never
leaves a damaged file or destroys the previous good one (``DESIGN.md`` section 14), and
:func:`check_writable` lets a command refuse a bad destination before a long computation.
"""
from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable

__all__ = ["atomic_write", "check_writable", "destination", "figure_format"]


def destination(path: os.PathLike[str] | str) -> str:
    """The file a write to ``path`` should change: a symbolic link's target (so that the
    link stays a link), else ``path`` itself, as an absolute path.

    Raises
    ------
    IsADirectoryError
        If the destination is a directory.
    ValueError
        If it exists and is neither a regular file nor a device or FIFO (a socket).
    FileNotFoundError
        If its folder does not exist (naming ``path``, not a temporary file).
    """
    path = os.fspath(path)
    if not path:
        raise ValueError("the output path is empty")
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise IsADirectoryError(21, "Is a directory", path)
    if os.path.lexists(target):
        mode = os.stat(target).st_mode
        if not (stat.S_ISREG(mode) or _is_stream(mode)):
            raise ValueError(f"{path} exists and is not a regular file, a device or a FIFO; "
                             "refusing to write to it")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, "No such directory for the output", path)
    return target


def _is_stream(mode: int) -> bool:
    """A device or FIFO: written directly, never replaced (``/dev/stdout``, a pipe)."""
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)


def check_writable(path: os.PathLike[str] | str) -> str:
    """:func:`destination`, plus write permission on its folder: call it before computing."""
    target = destination(path)
    folder = os.path.dirname(target)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied (cannot create files in its folder)",
                              os.fspath(path))
    return target


def _umask() -> int:
    """The process's umask, read without changing it (Linux ``/proc``), else 0o022."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path: os.PathLike[str] | str, write: Callable[[str], object],
                 suffix: str | None = None) -> str:
    """Call ``write(tmp)`` to write a temporary file beside ``path``'s destination, then
    move it into place; on any error or interrupt the temporary file is removed and the
    previous file, if any, is untouched.

    Parameters
    ----------
    path : str or os.PathLike
        The output. A symbolic link is written through (its target changes); a device
        or FIFO is written directly; a directory or socket is refused
        (:func:`destination`).
    write : callable
        ``write(tmp_path)`` writes the whole content to ``tmp_path``.
    suffix : str, optional
        The temporary file's suffix (default: ``path``'s own extension, so that writers
        that choose a format by extension see the right one).

    Returns
    -------
    str
        The file written (the absolute destination).

    Notes
    -----
    The new file gets the mode a plain ``open(path, "w")`` would give it: the replaced
    file's mode, or ``0o666`` less the umask (``mkstemp`` would leave ``0o600``).
    """
    target = destination(path)
    if os.path.exists(target) and _is_stream(os.stat(target).st_mode):
        write(target)                  # a device or FIFO: written to, never replaced
        return target
    folder = os.path.dirname(target)
    if suffix is None:
        suffix = os.path.splitext(target)[1]
    mode = stat.S_IMODE(os.stat(target).st_mode) if os.path.exists(target) \
        else 0o666 & ~_umask()
    handle, tmp = tempfile.mkstemp(suffix=suffix, prefix=".kryptonref-", dir=folder)
    os.close(handle)
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


#: Figure formats by file extension (matplotlib writes each; JPEG through Pillow, which
#: matplotlib requires).
FIGURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf",
                  ".svg": "svg"}


def figure_format(path: os.PathLike[str] | str) -> str:
    """The figure format ``path``'s extension names (``ValueError`` listing the supported
    ones otherwise): an overlay saved as ``x.pdf`` is a PDF, not PNG bytes."""
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension not in FIGURE_FORMATS:
        raise ValueError(f"{os.fspath(path)}: cannot tell the image format from the extension "
                         f"{extension or '(none)'!r}; use one of "
                         f"{', '.join(sorted(FIGURE_FORMATS))}")
    return FIGURE_FORMATS[extension]
