import subprocess
import sys


def test_import_liveseg_stays_light():
    code = (
        "import sys, liveseg, liveseg.session, liveseg.cli, liveseg.store, liveseg.pipeline;"
        "heavy=[m for m in ('torch','cellpose','qtpy','PyQt6','PySide6','napari')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout}"
