"""Files that must survive a crash: atomic writes, verified checkpoints, guarded output folders.

* :func:`atomic_write` (and :func:`atomic_save` for ``torch.save``/``np.savez``-style writers) writes to a
  temporary file beside the target and renames it into place, so a crash or Ctrl-C mid-write leaves the
  previous file whole.
* A run checkpoint is OpenMM's own file (``checkpoint.chk``, loadable with ``Simulation.loadCheckpoint``)
  plus a record beside it (``checkpoint.json``): its size and SHA-256, the step, and how many trajectory
  frames and log rows the run had written at that step. :func:`load_checkpoint` checks the file against
  its record before OpenMM reads it, so a truncated, foreign or unrecorded checkpoint is refused by name
  instead of continuing from a corrupt state; the counts let a resumed run drop what was written after
  the checkpoint (:func:`rewind_outputs`).
* Data and model files are ``.npz`` archives with a JSON header (:func:`save_archive`, :func:`read_archive`).
* :func:`check_output` refuses to write a run into a folder that holds another run's results unless
  asked to resume or overwrite, and checks that the folder can be written before any work starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zipfile
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import openmm

from .validation import InputError, fail

CHECKPOINT_FORMAT = "openmm_accel.checkpoint"
CHECKPOINT_VERSION = 1


def atomic_save(path: str, writer: Callable[[str], None]) -> None:
    """Call ``writer(temporary_path)`` and rename the result onto ``path`` (same folder, so the rename is
    atomic); the temporary file is removed if the writer fails."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        writer(temporary)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # as an ordinary open() would have made it (mkstemp: 0600)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_save`)."""
    def write(temporary):
        with open(temporary, "wb") as handle:
            handle.write(data)
    atomic_save(path, write)


def atomic_savez(path: str, **arrays) -> None:
    """``np.savez_compressed`` to exactly ``path`` (no ``.npz`` appended), atomically. Compressed because an
    archive's JSON header is a numpy unicode string (4 bytes a character) that dominates a model file
    (4.0 -> 0.8 MB for a 1,600-epoch score model); ``np.load`` reads either kind."""
    def write(temporary):
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    atomic_save(path, write)


HEADER = "__header__"


def save_archive(path: str, header: dict, arrays: dict) -> None:
    """Write ``arrays`` and a JSON ``header`` (what the file is: its format, version, units, provenance) to
    one ``.npz`` archive, atomically. Read back with :func:`read_archive`, without pickle."""
    atomic_savez(path, **{HEADER: np.array(json.dumps(header))}, **arrays)


def read_archive(path: str, format_name: str, version: int, argument: str, what: str):
    """``(header, arrays)`` of an archive written by :func:`save_archive` in ``format_name`` (up to
    ``version``); anything else (missing, damaged, foreign, newer) is refused naming ``argument``."""
    if not os.path.isfile(path):
        raise fail(argument, f"an existing {what}", path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            header = json.loads(str(stored[HEADER])) if HEADER in stored.files else {}
            arrays = {name: stored[name] for name in stored.files if name != HEADER}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise fail(argument, f"a readable {what}", f"{path} ({type(error).__name__}: {error})") from None
    if header.get("format") != format_name:
        raise fail(argument, f"a {what} written by openmm_accel", f"{path} (format {header.get('format')!r})")
    if header.get("format_version", 0) > version:
        raise fail(argument, f"a {what} of format version <= {version} (update openmm_accel)",
                   f"{path} (version {header.get('format_version')})")
    return header, arrays


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (read in blocks): how recipes recognise the files they were made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(checkpoint: str) -> str:
    """The record (size, checksum, step, output counts) kept beside ``checkpoint``."""
    return os.path.splitext(checkpoint)[0] + ".json"


def save_checkpoint(simulation, path: str, outputs: Dict[str, int], run: Optional[dict] = None) -> dict:
    """Write the Simulation's checkpoint and its record atomically; ``outputs`` maps each output file's
    name to the frames or rows it holds at this step; ``run``: the settings that make the run what it is
    (a resume with others is refused). Returns the record."""
    data = simulation.context.createCheckpoint()
    record = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": int(simulation.currentStep),
              "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "outputs": dict(outputs),
              **({} if run is None else {"run": run})}
    atomic_write(path, data)
    atomic_write(record_path(path), json.dumps(record, indent=1).encode())
    return record


def verified_checkpoint(path: str) -> tuple:
    """``(checkpoint bytes, record)`` after checking the file against its record; :class:`InputError`
    naming the problem for a missing, truncated, altered or unrecorded checkpoint."""
    if not os.path.isfile(path):
        raise fail("resume", f"an existing checkpoint {path}", "no such file")
    record_file = record_path(path)
    try:
        with open(record_file) as handle:
            record = json.load(handle)
        if record.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not an openmm_accel checkpoint record")
    except (OSError, ValueError) as error:
        raise fail("resume", f"a checkpoint with its record {record_file} (written with it by openmm_accel "
                   "run; without it the checkpoint cannot be verified)", f"{type(error).__name__}: {error}") from None
    if record["version"] > CHECKPOINT_VERSION:
        raise fail("resume", f"a checkpoint record of version <= {CHECKPOINT_VERSION} (update openmm_accel)",
                   record["version"])
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) != record["bytes"] or hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise fail("resume", f"the checkpoint its record describes ({record['bytes']} bytes at step "
                   f"{record['step']}, SHA-256 {record['sha256'][:12]}...)",
                   f"{path} with {len(data)} bytes and another checksum: damaged or replaced; it was not used")
    return data, record


def load_checkpoint(simulation, path: str) -> dict:
    """Load a verified checkpoint (see :func:`verified_checkpoint`) into ``simulation``; returns its record."""
    data, record = verified_checkpoint(path)
    try:
        simulation.context.loadCheckpoint(data)
    except openmm.OpenMMException as error:
        raise fail("resume", "a checkpoint of this run's System and integrator (same system, model and "
                   "method)", f"{path}, which OpenMM could not load: {error}") from None
    return record


def dcd_frames(path: str) -> int:
    """Frames in a DCD file written by OpenMM (its header's count; 0 for a missing or empty file)."""
    if not os.path.isfile(path) or os.path.getsize(path) < 12:
        return 0
    with open(path, "rb") as handle:
        return struct.unpack("<i", handle.read(12)[8:12])[0]


def log_rows(path: str) -> int:
    """Data rows (not the ``#`` header) of a CSV log; 0 for a missing file."""
    if not os.path.isfile(path):
        return 0
    with open(path) as handle:
        return sum(1 for line in handle if line.strip() and not line.startswith("#"))


def output_count(path: str) -> int:
    """Frames of a DCD file, data rows of any other (a CSV log): what a checkpoint records of each output."""
    return dcd_frames(path) if path.endswith(".dcd") else log_rows(path)


def rewind_outputs(paths: Dict[str, str], counts: Dict[str, int]) -> None:
    """Cut each of a run's outputs (``paths``: name -> file) to what it held at the checkpoint being resumed
    (``counts``: name -> frames of a DCD, rows of a CSV log; a name without a count is emptied). A run stopped
    by an error, a kill or Ctrl-C may have reported past its last checkpoint; resuming would otherwise write
    those steps a second time."""
    for name, path in paths.items():
        (_rewind_dcd if path.endswith(".dcd") else _rewind_log)(path, counts.get(name, 0))


def _rewind_dcd(dcd_path: str, frames: int) -> None:
    """Cut a DCD to its first ``frames`` frames, updating the header's frame count and last step (OpenMM's
    ``DCDFile`` layout)."""
    if dcd_frames(dcd_path) > frames:
        with open(dcd_path, "r+b") as handle:
            header = handle.read(100)
            first, interval = struct.unpack("<2i", header[12:20])
            has_box = struct.unpack("<i", header[48:52])[0] == 1
            comments = struct.unpack("<i", header[92:96])[0]
            handle.seek(104 + comments)
            atoms = struct.unpack("<i", handle.read(4))[0]
            frame_bytes = (56 if has_box else 0) + 3 * (8 + 4 * atoms)
            handle.truncate(104 + comments + 8 + frames * frame_bytes)
            handle.seek(8)
            handle.write(struct.pack("<i", frames))
            handle.seek(20)
            handle.write(struct.pack("<i", first + max(frames - 1, 0) * interval))


def _rewind_log(log_path: str, rows: int) -> None:
    """Cut a CSV log to its header and first ``rows`` data rows."""
    if log_rows(log_path) > rows:
        with open(log_path) as handle:
            lines = handle.readlines()
        kept, data = [], 0
        for line in lines:
            is_row = bool(line.strip()) and not line.startswith("#")
            if is_row and data >= rows:
                break
            data += is_row
            kept.append(line)
        atomic_write(log_path, "".join(kept).encode())


def check_output(folder: str, files: Iterable[str], resume: bool, overwrite: bool) -> List[str]:
    """Make sure ``folder`` can hold a run: creatable and writable, and not holding another run's ``files``
    unless ``resume`` (continue it) or ``overwrite`` (replace it) is asked for. Returns the ``files`` it
    holds; nothing is removed here (see :func:`discard`), so a later input error loses nothing."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise fail("output", "a folder for the run's files", f"{folder!r}, which is a file")
    writable_folder(folder, "output", folder)
    return earlier_results(folder, files, resume, overwrite, folder)


def refuse_resume_and_overwrite(resume: bool, overwrite: bool) -> None:
    """A job either continues earlier results or replaces them, never both."""
    if resume and overwrite:
        raise fail("overwrite", "not together with resume (resume continues, overwrite discards)", True)


def earlier_results(folder: str, names: Iterable[str], resume: bool, overwrite: bool, output: str) -> List[str]:
    """The ``names`` present in ``folder``: the results of an earlier run at ``output``, refused unless it is
    resumed or overwritten (never both). The one guard of runs and trainings against losing results."""
    refuse_resume_and_overwrite(resume, overwrite)
    existing = [name for name in names if os.path.exists(os.path.join(folder, name))]
    if existing and not (resume or overwrite):
        raise InputError(f"output: expected a place without earlier results, got {output!r}, where "
                         f"{', '.join(existing)} exist already; continue with --resume (resume=True), replace "
                         "them with --overwrite (overwrite=True), or choose another --output")
    return existing


def model_file_place(output: str, beside: Sequence[str], resume: bool, overwrite: bool) -> List[str]:
    """Check where a training writes its model file ``output`` (and, beside it, the files named by the suffixes
    ``beside``: checkpoints, data): a file name in a writable folder, with no earlier model unless resumed or
    overwritten. Returns the names of those files present."""
    if not isinstance(output, str) or not output or os.path.isdir(output):
        raise fail("output", "a model file name", f"{output!r}, a folder" if output and os.path.isdir(output)
                   else repr(output))
    folder = os.path.dirname(os.path.abspath(output))
    writable_folder(folder, "output", output)
    names = [os.path.basename(output)] + [os.path.basename(output) + end for end in beside]
    return earlier_results(folder, names, resume, overwrite, output)


def writable_folder(folder: str, argument: str, given: str) -> None:
    """Create ``folder`` if needed and check that a file can be written in it (before any work is done)."""
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test")
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise fail(argument, "a path in a folder that can be created and written",
                   f"{given!r} ({error.strerror or error})") from None


def discard(folder: str, names: Iterable[str]) -> None:
    """Remove the files ``names`` of ``folder`` (an earlier run being overwritten)."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            os.remove(path)


def staging_prefix(output: str, suffixes: Iterable[str], replacing: bool) -> str:
    """Where a job writes the files ``output + suffix``: in place, or, when it replaces earlier ones, beside
    them as ``output + ".new" + suffix`` until :func:`promote_staged` moves them into place, so that a failed
    or interrupted replacement loses nothing (what an earlier interrupted one staged is removed: it is never
    continued from)."""
    if not replacing:
        return output
    prefix = output + ".new"
    for suffix in suffixes:
        if os.path.exists(prefix + suffix):
            os.remove(prefix + suffix)
    return prefix


def promote_staged(output: str, prefix: str, suffixes: Iterable[str]) -> None:
    """After the job's main result is saved: its staged files replace the earlier ones (an earlier one without
    a staged counterpart is removed). Nothing to do when nothing was staged."""
    if prefix == output:
        return
    for suffix in suffixes:
        if os.path.exists(prefix + suffix):
            os.replace(prefix + suffix, output + suffix)
        elif os.path.exists(output + suffix):
            os.remove(output + suffix)


@contextmanager
def folder_lock(folder: str, argument: str = "output"):
    """Hold ``folder``'s writer lock while the block runs: a second process writing into the same folder is
    refused by name. The lock is the operating system's (``flock`` on ``folder/.lock``), so a crashed or
    killed process leaves nothing stuck."""
    import fcntl
    os.makedirs(folder, exist_ok=True)
    handle = open(os.path.join(folder, ".lock"), "a")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise fail(argument, "a folder no other process is writing", f"{folder!r}, which another "
                       "openmm-accel process is writing now") from None
        yield
    finally:
        handle.close()  # releases the lock
