"""``python -m dsp_monai.label start_server --studies DIR [--app DIR] [--host H] [--port P] [--conf KEY VALUE]...
[--model PATH]``: starts the standard MONAI Label server with the dsp_monai app.

The app folder (default ``$DSP_MONAI_LABEL_APP`` or ``~/.local/share/dsp_monai/label-app``) must be writable: the
server creates ``model/``, ``logs/``, ``lib/`` and ``bin/`` in it, and training runs go to ``runs/``. This command
creates it with its ``main.py`` and then replaces itself (same process id) by::

    python -m monailabel.main start_server --app APP --studies DIR --host H --port P \\
        --uvicorn_app dsp_monai.label.server:app [--conf KEY VALUE]...

``--model PATH`` copies a trained ``model.pt`` (a state dict of the bundle's network, for example
``bundle/models/model.pt`` after ``make run``) into the app before starting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from dsp_monai.data.files import write_text

MAIN_PY = '''"""MONAI Label app folder of dsp_monai (written by python -m dsp_monai.label start_server)."""

from dsp_monai.label.app import DSPLabelApp  # noqa: F401  (the server loads the MONAILabelApp subclass found here)
'''

DEFAULT_APP_DIR = os.path.join("~", ".local", "share", "dsp_monai", "label-app")


def prepare_app_dir(app_dir: str, model: str | None = None) -> str:
    """Creates (or refreshes) the app folder: ``main.py`` and ``model/``; copies ``model`` to ``model/model.pt``.

    Returns:
        The absolute app folder.
    """
    app_dir = os.path.abspath(os.path.expanduser(app_dir))
    os.makedirs(os.path.join(app_dir, "model"), exist_ok=True)
    write_text(os.path.join(app_dir, "main.py"), MAIN_PY)
    if model:
        if not os.path.isfile(model):
            raise SystemExit(f"--model {model}: file not found")
        shutil.copyfile(model, os.path.join(app_dir, "model", "model.pt"))
    return app_dir


def server_command(args: argparse.Namespace, app_dir: str) -> list[str]:
    """The ``python -m monailabel.main start_server`` command line."""
    command = [
        sys.executable, "-m", "monailabel.main", "start_server",
        "--app", app_dir,
        "--studies", os.path.abspath(os.path.expanduser(args.studies)),
        "--host", args.host,
        "--port", str(args.port),
        "--uvicorn_app", "dsp_monai.label.server:app",
    ]
    for key, value in args.conf or []:
        command += ["--conf", key, value]
    return command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dsp_monai.label", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start_server", help="start the MONAI Label server with the dsp_monai app")
    start.add_argument("--studies", required=True, help="folder of the images (the datastore; created if missing)")
    start.add_argument("--app", default=os.environ.get("DSP_MONAI_LABEL_APP", DEFAULT_APP_DIR),
                       help="writable app folder (default: $DSP_MONAI_LABEL_APP or %(default)s)")
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    start.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    start.add_argument("--conf", nargs=2, action="append", metavar=("KEY", "VALUE"),
                       help="app setting (see docs/label.md), repeatable")
    start.add_argument("--model", default=None, help="a trained model.pt to publish in the app before starting")
    args = parser.parse_args(argv)

    app_dir = prepare_app_dir(args.app, args.model)
    os.makedirs(os.path.abspath(os.path.expanduser(args.studies)), exist_ok=True)
    env = os.environ
    env.setdefault("MONAI_LABEL_TRACKING_ENABLED", "false")
    env.setdefault("MONAI_LABEL_DATASTORE_FILE_EXT",
                   '["*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.nii", "*.nii.gz"]')
    # the server and its training processes import dsp_monai from wherever this command found it
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    command = server_command(args, app_dir)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
