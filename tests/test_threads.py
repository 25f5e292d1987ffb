"""Calls from several Python threads queue up instead of crashing the interpreter.

Numba's ``workqueue`` threading layer (kryptonref's default) aborts the process
when parallel kernels are launched from two threads at once, so the check runs
in a subprocess.
"""
import textwrap

from .processes import run_python

SCRIPT = textwrap.dedent("""
    import threading
    import numpy as np
    import kryptonref as kr

    model = kr.zoo("demo_resnet", image_size=40)
    image = np.random.default_rng(0).standard_normal((3, 40, 40)).astype(np.float32)
    want = kr.occlusion(model, image, patch=8, stride=4).heatmap
    want_full = model.forward(image[None])
    bad = []

    def work():
        for _ in range(3):
            if not np.array_equal(kr.occlusion(model, image, patch=8, stride=4).heatmap, want):
                bad.append("occlusion")
            if not np.array_equal(model.forward(image[None]), want_full):
                bad.append("forward")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("different results:", bad)
""")


def test_occlusion_from_several_threads_at_once():
    assert "different results: []" in run_python(SCRIPT)
