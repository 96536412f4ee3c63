"""Where every output file is written: one check of the path, then a write to a temporary name and a rename.

Used by every writer (``compress``, ``model-devi``): an existing target must be a regular file
other than the inputs, and a reader never sees a half-written file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import DeepCompError


def check_output_path(path, inputs=()) -> None:
    """Refuse an output path that cannot or must not be written, before any work is done.

    Errors name the path as given: a directory, a missing or non-directory parent, a parent
    this user cannot create files in, an existing target that is not a regular file (a device
    such as /dev/null or a FIFO would be replaced by a regular file) and a target that is one of
    ``inputs`` (same file, by inode: the input would be replaced by the output).
    """
    given = str(path)
    path = Path(path)
    if path.is_dir():
        raise DeepCompError(f"{given}: is a directory; give the output file name, e.g. {path / 'model.dcz'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise DeepCompError(f"{given}: directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise DeepCompError(f"{given}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DeepCompError(f"{given}: cannot create files in directory {parent} (permission denied)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DeepCompError(f"{given}: cannot be checked ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DeepCompError(f"{given}: exists and is not a regular file (a device, FIFO or socket); writing would "
                            "replace it. Give the name of a regular file")
    for source in inputs:
        try:
            same = os.path.samefile(path, source)
        except OSError:
            continue
        if same:
            raise DeepCompError(f"{given}: is the input file {source}; writing would replace it. Give another "
                                "output name")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, writer, inputs=()) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` only if it succeeded.

    ``path`` passes :func:`check_output_path` (``inputs``: files it must not be) first. The file
    gets the permissions any new file gets (0666 less the umask), not mkstemp's 0600. Errors
    name ``path``, never the temporary file.
    """
    check_output_path(path, inputs)
    given = str(path)
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise DeepCompError(f"{given}: cannot be written ({exc.strerror or exc})") from exc
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise DeepCompError(f"{given}: cannot be written ({exc.strerror or exc})") from exc
        raise
