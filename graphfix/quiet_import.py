"""TensorFlow imported without its C++ start-up lines, so a user sees graphfix's own lines first.

No TensorFlow import at module level: the CLI calls this before anything imports it.
"""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (absl, oneDNN, cudart) kept off stderr.

    TF_CPP_MIN_LOG_LEVEL does not reach the lines TensorFlow prints before absl's logging
    is set up, so during the import stderr's file descriptor points at a temporary file.
    If the import fails, what it printed is shown after all. --debug skips this.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
