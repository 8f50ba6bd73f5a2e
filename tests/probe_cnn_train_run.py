"""Train the probe CNN by its real recipe into COIN_SCALE_CACHE and print the checkpoint's path:
the test session's background training (`conftest.py::pytest_collection_finish`). A script of its
own, so CPU meters see it by this name, apart from the tests' `python -c` children."""

from coin_scale.sweep.inputs import probe_cnn_checkpoint

if __name__ == "__main__":
    print(probe_cnn_checkpoint())
