"""A full disk is named in one line, with the path being written: a file, or a SQLite store.

Each test fills a real file system of its own (the ``small_disk`` fixture)."""

import os

import pytest
import sqlalchemy

from optuna_sweep import disk_full_line


def fill(folder, chunk: bytes = b"\0" * (1 << 16)) -> None:
    """Write a ballast file until the file system refuses more."""
    with pytest.raises(OSError), open(folder / "ballast", "wb") as ballast:
        while True:
            ballast.write(chunk)
            ballast.flush()


def test_a_write_to_a_full_disk_names_the_file_even_where_the_error_does_not(small_disk):
    disk = small_disk(1)
    fill(disk)
    with pytest.raises(OSError) as caught, open(disk / "figure.png", "wb") as out:
        out.write(b"x" * (1 << 20))
        out.flush()
    assert caught.value.filename is None  # what Python gives: no file name
    assert disk_full_line(caught.value) == f"No space left on device while writing {disk / 'figure.png'}"


def test_a_full_sqlite_store_is_named_by_its_database(small_disk):
    disk = small_disk(1)
    engine = sqlalchemy.create_engine(f"sqlite:///{disk / 'store.db'}")
    table = sqlalchemy.Table("rows", sqlalchemy.MetaData(), sqlalchemy.Column("blob", sqlalchemy.LargeBinary))
    table.metadata.create_all(engine)
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught, engine.begin() as connection:
        for _ in range(100):
            connection.execute(table.insert(), [{"blob": b"\1" * (1 << 16)}])
    engine.dispose()
    assert "database or disk is full" in str(caught.value)
    assert disk_full_line(caught.value) == f"No space left on device while writing {disk / 'store.db'}"


def test_other_errors_are_not_a_full_disk(tmp_path):
    with pytest.raises(OSError) as caught:
        open(tmp_path / "missing" / "file")
    assert disk_full_line(caught.value) is None


def test_a_file_opened_from_a_descriptor_is_named_by_the_path_its_frame_holds(small_disk):
    disk = small_disk(1)
    fill(disk)

    def stage(source_path: str, destination_path: str) -> None:  # as a store stages an artifact
        descriptor = os.open(destination_path, os.O_WRONLY | os.O_CREAT)
        with os.fdopen(descriptor, "wb") as staged, open(source_path, "rb") as source:
            staged.write(source.read())

    (disk.parent / "source.bin").write_bytes(b"x" * (1 << 20))
    with pytest.raises(OSError) as caught:
        stage(str(disk.parent / "source.bin"), str(disk / "artifact.bin"))
    assert disk_full_line(caught.value) == f"No space left on device while writing {disk / 'artifact.bin'}"
