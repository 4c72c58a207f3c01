"""`id2image protect` end to end on a tiny aligned face set (random images:
the plumbing, not the faces, is under test): every setting measured under
its threat models, the page shows the JSON's figures, keys are never
written, bad requests fail before any work, and the page renders offline in
headless Chromium where it is installed."""

import html
import json
import re
import shutil
import subprocess

import jax
import numpy as np
import pytest
from PIL import Image

from id2image_jax import cli
from id2image_jax import errors
from id2image_jax import protection
from id2image_jax.data import align
from id2image_jax.data import celeba
from id2image_jax.reports import protect as report

PEOPLE, PER_PERSON, SIZE = 6, 3, 32
SECRET = 987654321987  # > 2**32: every bit of it makes the key
SCHEMES = 'biohash:bits=16'
TINY = ['--set', 'images=18', '--set', 'targets=2', '--set', 'steps=2',
        '--set', 'epochs=1', '--set', 'progress=False',
        '--set', 'attributes=Male,Smiling',
        '--set', "attribute_nets=('faceapi_age_gender',)",
        '--eval-encoder', 'mobilefacenet', '--generator', 'demo:demo-8']


def _faces(root):
  """What `id2image align` writes for a CelebA-layout folder."""
  rng = np.random.default_rng(0)
  images = root / celeba.IMAGES_DIR
  images.mkdir(parents=True)
  names = [f'{i + 1:06d}.jpg' for i in range(PEOPLE * PER_PERSON)]
  lines = []
  for name in names:
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)).save(
        images / name)
    lines.append(name + ' ' + ' '.join(
        f'{v:.4f}' for v in rng.uniform(0.2, 0.8, 136)) + '\n')
  (root / align.LANDMARK_FILE).write_text(''.join(lines))
  (root / celeba.IDENTITY_FILE).write_text(''.join(
      f'{n} {i // PER_PERSON + 1}\n' for i, n in enumerate(names)))
  attrs = rng.choice([-1, 1], (len(names), 40))
  (root / celeba.ATTRIBUTE_FILE).write_text(
      f'{len(names)}\n' + ' '.join(celeba.ATTRIBUTE_NAMES) + '\n' + ''.join(
          n + ' ' + ' '.join(str(v) for v in a) + '\n'
          for n, a in zip(names, attrs)))
  return root


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp('protect')
  data = _faces(root / 'faces')
  out = root / 'run'
  assert cli.main(['protect', '--encoder', 'dlib', '--data', str(data),
                   '--schemes', SCHEMES, '--key-seed', str(SECRET),
                   '--out', str(out), *TINY]) == 0
  with open(out / 'protect.json') as f:
    return data, out, json.load(f)


def test_every_setting_and_its_threat_models(run):
  _, out, results = run
  labels = [e['setting'] for e in results['settings']]
  assert labels == ['none', 'biohash:bits=16']
  for e in results['settings']:
    assert e['utility']['threat_model'] == 'system'
    assert e['leakage']['threat_model'] == 'leakage'
    assert e['linkability']['threat_model'] == 'linkage'
    assert e['reconstruction_informed']['threat_model'] == 'informed'
    assert e['reconstruction_informed']['num_targets'] == 2
    # 6 people x 3 photos: 18 genuine and 135 impostor pairs.
    assert (e['utility']['num_genuine'],
            e['utility']['num_impostor']) == (18, 135)
    assert set(e['leakage']['attributes']) <= {'Male', 'Smiling'}
  by = {e['setting']: e for e in results['settings']}
  # Only the secret-keyed scheme is attacked with a guessed key.
  assert 'reconstruction_key_unknown' in by['biohash:bits=16']
  assert 'reconstruction_key_unknown' not in by['none']
  assert by['biohash:bits=16']['score'] == 'hamming'
  assert by['biohash:bits=16']['gradient'] == 'straight-through'
  assert by['biohash:bits=16']['template_size'] == 16
  for e in results['settings']:
    assert 0.0 <= e['linkability']['d_sys'] <= 1.0
    assert e['linkability']['num_mated'] == PEOPLE * PER_PERSON * (
        PER_PERSON - 1)
  assert set(results['threat_models']) == {'system', 'leakage', 'informed',
                                           'key_unknown', 'linkage'}
  for name in ('protect.html', 'protect.json', 'protect_chart.png'):
    assert (out / name).is_file()


def test_every_section_and_the_shown_figures_are_the_json(run):
  _, out, results = run
  page = (out / 'protect.html').read_text()
  for section in report.SECTIONS:
    assert f'<section id="{section}">' in page, section
  shown = re.findall(r'data-key="([^"]+)">([^<]+)<', page)
  assert len(shown) > 30
  for path, text in shown:
    value = report._get(results, html.unescape(path))  # pylint: disable=protected-access
    if value is None:
      assert text == 'n/a', path
    else:
      # As rounded for display: 0.01 for rates, whole seconds for times.
      step = 10.0 ** -len(text.partition('.')[2])
      assert float(text) == pytest.approx(value, abs=step / 2 + 1e-9), path
  for threat in results['threat_models'].values():
    assert html.escape(threat) in page


def test_the_key_is_never_written(run):
  _, out, results = run
  keys = protection.system_keys(SECRET)
  words = [str(int(w)) for k in keys.values()
           for w in np.asarray(jax.random.key_data(k))]
  for path in out.rglob('*'):
    if path.is_file():
      text = path.read_bytes().decode('latin-1')
      assert str(SECRET) not in text, path
      for w in words:
        assert not re.search(rf'\b{w}\b', text), (path, w)
  assert results['config']['keyed'] is True
  assert 'key_seed' not in json.dumps(results)


def test_bad_requests_fail_before_any_work(tmp_path, run):
  data, _, _ = run
  cases = [('foo:k=3', '5', "unknown scheme 'foo'"),
           ('partial:k=200', '5', r'k=200 exceeds D'),
           ('biohash:bits=0', '5', 'bits must be >= 1'),
           ('partial:q=3', '5', "no parameter 'q'"),
           ('biohash:bits=8', None, 'need.* a key'),
           ('biohash:bits=8', '-3', 'non-negative integer')]
  for i, (schemes, seed, message) in enumerate(cases):
    out = tmp_path / str(i)
    argv = ['protect', '--data', str(data), '--schemes', schemes,
            '--out', str(out), *TINY]
    if seed is not None:
      argv += ['--key-seed', seed]
    with pytest.raises(ValueError, match=message):
      cli.main(argv)
    assert not out.exists()  # nothing written, nothing aligned
  with pytest.raises(FileNotFoundError, match='no such folder'):
    cli.main(['protect', '--data', str(tmp_path / 'nope'), '--schemes',
              'partial:k=3', '--out', str(tmp_path / 'x'), *TINY])


@pytest.mark.slow
def test_score_only_attacker_through_a_binary_scheme(tmp_path, run):
  data, _, _ = run
  out = tmp_path / 'nes'
  assert cli.main(['protect', '--data', str(data), '--schemes',
                   'quantise:bits=1', '--out', str(out), *TINY,
                   '--set', 'attack=nes', '--set', 'nes_population=2',
                   '--set', 'targets=1', '--set', 'attributes=Male']) == 0
  with open(out / 'protect.json') as f:
    results = json.load(f)
  rec = results['settings'][1]['reconstruction_informed']
  assert rec['attack'] == 'nes' and rec['gradient'].startswith('none')
  assert rec['queries_per_target'] == (2 + 1) * (2 * 2 + 1)
  assert results['config']['keyed'] is False


_BROWSER = next((b for b in ('chromium', 'chromium-browser', 'google-chrome')
                 if shutil.which(b)), None)


def _render(page_path, tmp_path):
  """(images, images the browser could not decode, page height) of a page
  rendered offline by headless Chromium."""
  page = page_path.read_text()
  probe = ('<script>window.addEventListener("load", () => {'
           'const bad = [...document.images].filter('
           'i => !i.complete || i.naturalWidth === 0).length;'
           'document.body.setAttribute("data-probe", '
           '`${document.images.length}/${bad}/${document.body.scrollHeight}`);'
           '});</script>')
  probed = tmp_path / 'probed.html'
  probed.write_text(page.replace('</body>', probe + '</body>'))
  flags = ['--headless', '--no-sandbox', '--disable-gpu',
           '--disable-dev-shm-usage', '--virtual-time-budget=5000']
  dom = subprocess.run([_BROWSER, *flags, '--dump-dom', probed.as_uri()],
                       capture_output=True, text=True, timeout=120,
                       check=True).stdout
  return tuple(map(int, re.search(r'data-probe="(\d+)/(\d+)/(\d+)"',
                                  dom).groups()))


@pytest.mark.skipif(_BROWSER is None, reason='no Chromium (Debian package '
                    '`chromium`)')
def test_page_renders_offline_in_headless_chromium(run, tmp_path):
  _, out, _ = run
  images, broken, height = _render(out / 'protect.html', tmp_path)
  page = (out / 'protect.html').read_text()
  assert images == page.count('<img') and images >= 2  # chart and grid
  assert broken == 0 and height > 1000


AUDIT_TINY = ['--set', 'images=18', '--set', 'targets=2', '--set', 'steps=2',
              '--set', 'epochs=1', '--set', 'nes_population=2', '--set',
              'nes_steps=2', '--set', 'nes_targets=2', '--set',
              'progress=False', '--set', 'attributes=Male,Smiling', '--set',
              "attribute_nets=('faceapi_age_gender',)", '--set',
              'eval_encoder=mobilefacenet', '--generator', 'demo:demo-8']


@pytest.mark.slow
def test_audit_adds_what_protection_buys(run, tmp_path):
  data, _, _ = run
  with pytest.raises(ValueError, match="unknown scheme 'foo'"):
    cli.main(['audit', '--data', str(data), '--protect', 'foo:k=1',
              '--out', str(tmp_path / 'bad'), *AUDIT_TINY])
  assert not (tmp_path / 'bad').exists()
  with pytest.raises(errors.UsageError, match="no attribute 'Nope'"):
    cli.main(['audit', '--data', str(data), '--out', str(tmp_path / 'bad'),
              *AUDIT_TINY, '--set', 'attributes=Male,Nope'])
  assert not (tmp_path / 'bad').exists()
  out = tmp_path / 'audit'
  assert cli.main(['audit', '--encoder', 'dlib', '--data', str(data),
                   '--protect', 'biohash:bits=16', '--key-seed', str(SECRET),
                   '--out', str(out), *AUDIT_TINY]) == 0
  with open(out / 'audit.json') as f:
    results = json.load(f)
  assert sorted(results['leakage']['attributes']) == ['Male', 'Smiling']
  section = results['protection']
  assert [e['setting'] for e in section['settings']] == ['none',
                                                         'biohash:bits=16']
  assert 'reconstruction_key_unknown' in section['settings'][1]
  page = (out / 'audit.html').read_text()
  assert '<section id="protection">' in page
  shown = re.findall(r'data-key="(protection/[^"]+)">([^<]+)<', page)
  assert len(shown) > 10
  for path, text in shown:
    value = report._get(results, html.unescape(path))  # pylint: disable=protected-access
    step = 10.0 ** -len(text.partition('.')[2])
    assert text == 'n/a' if value is None else (
        float(text) == pytest.approx(value, abs=step / 2 + 1e-9)), path
  for path in out.rglob('*'):
    if path.is_file():
      assert str(SECRET) not in path.read_bytes().decode('latin-1'), path
  if _BROWSER:
    images, broken, _ = _render(out / 'audit.html', tmp_path)
    assert images == page.count('<img') and broken == 0
