"""Plain files (configs, licences): each ``files:`` entry of the spec, a file or a whole folder.

They land in the store's ``files/<dest>``; ``dest`` defaults to the file's or folder's own name.
"""

from __future__ import annotations

from airlock.bundle.format.manifest import Source
from airlock.bundle.staging.sources.base import Collected, SourceFile, safe_logical
from airlock.bundle.staging.sources.local import walk_folder
from airlock.errors import SourceError
from airlock.spec import FileSpec

FILES_ARTIFACT = "files"


def collect_files(entries: list[FileSpec]) -> Collected:
    files: dict[str, SourceFile] = {}
    for item in entries:
        dest = item.dest if item.dest is not None else item.path.name
        where = f"files: {item.path}"
        safe_logical(dest, where=where)
        if item.path.is_dir():
            found = [
                SourceFile(path=f"{dest}/{f.path}", origin=f.origin)
                for f in walk_folder(item.path, where=where)
            ]
        elif item.path.is_file():
            found = [SourceFile(path=dest, origin=item.path)]
        else:
            raise SourceError(f"{where}: no such file or folder")
        for f in found:
            if f.path in files:
                raise SourceError(
                    f"{where}: {f.path!r} is carried twice", hint="give the entries distinct 'dest'"
                )
            files[f.path] = f
    return Collected(
        kind="files",
        name=FILES_ARTIFACT,
        source=Source(type="file"),
        files=tuple(sorted(files.values(), key=lambda f: f.path)),
    )
