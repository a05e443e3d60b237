"""Generated conformations on disk, the same way for every method that samples them: any format mdtraj
writes, and beside a file without a topology (DCD, XTC, TRR, NetCDF) its first frame as ``FILE.pdb``, so
that ``mdtraj.load(FILE, top=FILE + ".pdb")`` works. Earlier results are never written over."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterable, List, Union

import numpy as np
from openmm import app

from ..storage import writable_folder
from ..validation import fail

WITHOUT_TOPOLOGY = (".dcd", ".xtc", ".trr", ".nc")


def check_new(path: str, argument: str = "output") -> None:
    """Refuse an existing file (or its topology PDB) or a folder that cannot be written, before any work."""
    beside = path + ".pdb" if os.path.splitext(path)[1].lower() in WITHOUT_TOPOLOGY else None
    for name in filter(None, (path, beside)):
        if os.path.exists(name):
            raise fail(argument, "a new file (samples are never written over earlier results)", name)
    writable_folder(os.path.dirname(os.path.abspath(path)), argument, path)


def check_format(path: str, topology: app.Topology, argument: str = "output") -> None:
    """Refuse, before any sampling, a ``path`` mdtraj cannot write conformations of ``topology`` to: a format
    it does not know or cannot write here (e.g. HDF5 without PyTables, a DCD path it cannot encode). One frame
    is written to a hidden file of the same name beside it, then removed."""
    import mdtraj
    folder, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    if not extension:
        raise fail(argument, "a file name with the extension of a format mdtraj writes (e.g. .dcd, .xtc, .pdb, "
                   ".h5)", path)
    probe = os.path.join(folder, f".{stem}.format-check{extension}")
    try:
        mdtraj.Trajectory(np.zeros((1, topology.getNumAtoms(), 3), np.float32),
                          mdtraj.Topology.from_openmm(topology)).save(probe)
    except Exception as error:  # mdtraj's own: unknown extension, missing optional package, encoding
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        raise fail(argument, "a file mdtraj can write here", f"{path} ({type(error).__name__}: {first})") from None
    finally:
        if os.path.exists(probe):
            os.remove(probe)


def write_conformations(path: str, positions: Union[np.ndarray, Iterable[np.ndarray]],
                        topology: app.Topology) -> List[str]:
    """Write conformations with ``topology`` to ``path``: an array ``(M, N, 3)`` nm, or an iterable of such
    batches, written as they come (DCD and XTC are streamed; other formats are written at the end).
    The file appears only when complete (written under a temporary name, removed if anything fails or the
    user interrupts). Returns the files written."""
    import mdtraj
    check_new(path)
    batches = [positions] if isinstance(positions, np.ndarray) else positions
    folder, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    partial = os.path.join(folder, f".{stem}.partial{extension}")
    top = mdtraj.Topology.from_openmm(topology)
    first, kept = None, []
    try:
        with _stream(partial, extension.lower()) as write:
            for batch in batches:
                batch = np.asarray(batch, dtype=np.float32)
                if first is None:
                    first = batch[:1]
                if write is None:
                    kept.append(batch)
                else:
                    write(batch)
        if first is None:
            raise fail("positions", "at least one conformation", "none")
        if kept:
            mdtraj.Trajectory(np.concatenate(kept), top).save(partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    written = [path]
    if extension.lower() in WITHOUT_TOPOLOGY:
        mdtraj.Trajectory(first, top).save_pdb(path + ".pdb")
        written.append(path + ".pdb")
    return written


@contextmanager
def _stream(path: str, extension: str):
    """A writer of batches (nm) for the formats mdtraj can append to, else None."""
    from mdtraj.formats import DCDTrajectoryFile, XTCTrajectoryFile
    if extension == ".dcd":
        with DCDTrajectoryFile(path, "w") as handle:
            yield lambda batch: handle.write(batch * 10.0)  # DCD holds angstroms
    elif extension == ".xtc":
        with XTCTrajectoryFile(path, "w") as handle:
            yield lambda batch: handle.write(batch)
    else:
        yield None
