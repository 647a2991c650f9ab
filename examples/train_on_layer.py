"""Open napari with a noisy sample, train a denoiser on it with the Train widget, restore with it.

Run ``python examples/train_on_layer.py`` (add ``--quit`` to close napari once the
restored layer is shown, e.g. under ``xvfb-run``).  Training is self-supervised
(Neighbor2Neighbor): the noisy layer is the only data, no clean image is needed.  The network
is very small and trains for only 20 steps so that the example runs in seconds on a CPU;
real use trains the "tiny" preset or larger for a few thousand steps (a GPU helps).

The Train widget adds the trained model to the Restore widget's model list and selects
it there, so the Restore widget's Run uses it right away.  The same in a script without
a viewer::

    import napari_attnrestore as ar
    from napari_attnrestore.training.session import train_to_end

    model = train_to_end(ar.train(noisy, steps=2000))  # or iterate the events for progress
    ar.save_model(model, "mine.safetensors", task="denoise")
    clean = ar.restore(noisy, model=model).compute()
"""

from __future__ import annotations

import argparse

import napari

SMALL = {"dim": 16, "depths": [1], "heads": 2, "window": 8}  # seconds per step on a CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="noisy_camera", help="sample key (noisy_camera, noisy_cell, ...)")
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--quit", action="store_true", help="close napari when the restored layer is shown")
    args = parser.parse_args()

    viewer = napari.Viewer(title="AttnRestore: train on a layer")
    (layer,) = viewer.open_sample("napari-attnrestore", args.sample)
    _dock, restore = viewer.window.add_plugin_dock_widget("napari-attnrestore", "Restore")
    _dock, train = viewer.window.add_plugin_dock_widget("napari-attnrestore", "Train")
    train.set_options(input=layer, task="denoise", start="new hat", steps=args.steps, batch=4, patch=64,
                      config=SMALL)

    def restore_with_trained_model() -> None:
        if train.model is None:  # training failed: the widget has said why
            return
        print(f"trained '{train.model_name}'; restoring {layer.name} with it")
        restore.set_options(input=layer)  # the model is already selected in the Restore widget
        restore.run()
        if args.quit and restore.worker is not None:
            restore.worker.finished.connect(viewer.close)

    train.train()  # runs in a worker thread: the loss curve updates live
    if train.worker is not None:
        train.worker.finished.connect(restore_with_trained_model)
    (viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid).enabled = True
    napari.run()


if __name__ == "__main__":
    main()
