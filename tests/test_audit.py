"""`id2image audit` end to end on a tiny aligned face set, checked as a
document: every section, every picture decodes, every figure shown is the
one in audit.json; and, where Chromium is installed, rendered by a headless
browser (offline, every image decoded)."""

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from id2image_jax import cli
from id2image_jax import errors
from id2image_jax import metrics
from id2image_jax.data import align
from id2image_jax.data import celeba
from id2image_jax.reports import audit as report
from id2image_jax.reports import parts as parts_lib

PEOPLE, PER_PERSON, SIZE = 6, 3, 32
# Any attribute name must work: one has a '/', which the report's
# '/'-joined key paths once split (KeyError after all the work).
SLASHED = 'Bags/Under_Eyes'
ATTRIBUTE_NAMES = [SLASHED if n == 'Bags_Under_Eyes' else n
                   for n in celeba.ATTRIBUTE_NAMES]
TINY = ['--set', 'images=18', '--set', 'targets=2', '--set', 'steps=2',
        '--set', 'epochs=1', '--set', 'nes_population=2', '--set',
        'nes_steps=2', '--set', 'nes_targets=2', '--set', 'progress=False',
        '--set', "attribute_nets=('faceapi_age_gender',)",
        '--set', 'eval_encoder=mobilefacenet', '--generator', 'demo:demo-8']


def _aligned_flat_folder(root, num, *, images_dir=''):
  """What `id2image align` writes for a flat folder of photos (random
  images: the plumbing, not the faces, is under test)."""
  rng = np.random.default_rng(0)
  images = root / images_dir
  images.mkdir(parents=True)
  names = [f'{i + 1:06d}.jpg' for i in range(num)]
  lines = []
  for name in names:
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)).save(
        images / name)
    points = rng.uniform(0.2, 0.8, 136)
    lines.append(name + ' ' + ' '.join(f'{v:.4f}' for v in points) + '\n')
  (root / align.LANDMARK_FILE).write_text(''.join(lines))
  return names


def _aligned_folder(root):
  """What `id2image align` writes for a CelebA-layout folder."""
  names = _aligned_flat_folder(root, PEOPLE * PER_PERSON,
                               images_dir=celeba.IMAGES_DIR)
  rng = np.random.default_rng(1)
  (root / celeba.IDENTITY_FILE).write_text(''.join(
      f'{n} {i // PER_PERSON + 1}\n' for i, n in enumerate(names)))
  attrs = rng.choice([-1, 1], (len(names), 40))
  (root / celeba.ATTRIBUTE_FILE).write_text(
      f'{len(names)}\n' + ' '.join(ATTRIBUTE_NAMES) + '\n' + ''.join(
          n + ' ' + ' '.join(str(v) for v in a) + '\n'
          for n, a in zip(names, attrs)))
  return root


# A few attributes (all 40 cost a minute of head training here).
AUDITED = [*TINY, '--set', f'attributes=Male,Smiling,Young,{SLASHED}']


@pytest.fixture(scope='module')
def audited(tmp_path_factory):
  root = tmp_path_factory.mktemp('audit')
  data = _aligned_folder(root / 'faces')
  out = root / 'run'
  assert cli.main(['audit', '--encoder', 'dlib', '--data', str(data),
                   '--out', str(out), *AUDITED]) == 0
  return data, out


def test_every_section_and_picture(audited):
  _, out = audited
  page = (out / 'audit.html').read_text()
  for section in report.SECTIONS:
    assert f'<section id="{section}">' in page, section
  uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
  assert len(uris) >= 3  # leakage chart, scores, grid (+ black-box)
  for uri in uris:
    Image.open(io.BytesIO(base64.b64decode(uri))).verify()
  assert 'src="http' not in page and "src='http" not in page  # offline


def test_an_attribute_name_with_a_slash_is_reported(audited):
  _, out = audited
  with open(out / 'audit.json') as f:
    leakage = json.load(f)['leakage']
  assert SLASHED in leakage['attributes']
  page = (out / 'audit.html').read_text()
  key = report.key_path('attributes', SLASHED, 'accuracy')
  assert f'data-key="{key}"' in page
  assert report._get(leakage, key) == (  # pylint: disable=protected-access
      leakage['attributes'][SLASHED]['accuracy'])


def test_run_facts_are_readable_rows_and_lists(audited):
  _, out = audited
  page = (out / 'audit.html').read_text()
  facts = page[page.index('<section id="facts">'):]
  facts = facts[:facts.index('</section>')]
  assert '{&quot;' not in facts and '{"' not in facts  # no raw JSON
  assert '<li><b>kind</b>: dlib</li>' in facts
  assert '<li><b>independent</b>: True</li>' in facts
  assert re.search(r'<li><b>jax</b>: [\d.]+</li>', facts)  # nested dict
  assert '<td>reused parts</td><td>none</td>' in facts  # an empty list


def test_long_lists_of_facts_fold_away():
  fact = report._fact  # pylint: disable=protected-access
  skipped = {f'{i:03d}.jpg': 'no face detected' for i in range(30)}
  assert fact(skipped).startswith('<details><summary>30</summary><ul>')
  assert fact(skipped).count('<li>') == 30
  assert '<li><b>007.jpg</b>: no face detected</li>' in fact(skipped)
  assert fact(['a', 'b']) == '<ul><li>a</li><li>b</li></ul>'
  assert fact('<i>x</i>') == '&lt;i&gt;x&lt;/i&gt;'
  assert fact(None) == 'n/a' and fact(12.345) == '12.3'


def test_rate_notes_are_on_the_page(audited):
  # Few genuine scores or impostor pairs: the page says how far to trust a
  # rate, next to it.
  _, out = audited
  page = (out / 'audit.html').read_text()
  with open(out / 'audit.json') as f:
    attack = json.load(f)['attack']
  notes = {part for role in ('attacked', 'evaluation')
           for tmrs in (attack[role]['tmr'], attack[role]['type2']['tmr'])
           for r in tmrs.values() if r.get('note')
           for part in r['note'].split('; ')}
  assert notes  # 2 targets: every rate is coarse
  for note in notes:
    assert html.escape(note) in page, note


def test_shown_figures_are_the_json_figures(audited):
  _, out = audited
  page = (out / 'audit.html').read_text()
  with open(out / 'audit.json') as f:
    results = json.load(f)
  shown = re.findall(r'data-key="([^"]+)">([^<]*)<', page)
  assert len(shown) >= 10
  for path, text in shown:
    for scope in (results, results['leakage'], results['attack'],
                  results['blackbox']):
      try:
        value = report._get(scope, path)  # pylint: disable=protected-access
        break
      except (KeyError, IndexError, TypeError):
        continue
    else:
      raise AssertionError(f'{path} is shown but not in audit.json')
    if value is None:
      assert text == 'n/a'
      continue
    # Equal up to the shown rounding.
    digits = text.rstrip('%').partition('.')[2]
    scale = 100 if text.endswith('%') else 1
    number = float(text.rstrip('%')) / scale
    assert abs(number - value) <= 0.51 * 10 ** -len(digits) / scale, (
        path, text, value)


def test_counts_and_sections_in_json(audited):
  _, out = audited
  with open(out / 'audit.json') as f:
    results = json.load(f)
  assert results['facts']['faces'] == PEOPLE * PER_PERSON
  assert results['facts']['verifier']['kind'] == 'mobilefacenet'
  assert results['facts']['verifier']['independent']
  assert 'type2' in results['attack']['evaluation']
  leak = results['leakage']
  assert leak['num_train'] + leak['num_test'] == PEOPLE * PER_PERSON
  assert set(leak) >= {'attributes', 'landmarks', 'histogram'}
  attack = results['attack']
  assert attack['num_targets'] == 2 and not attack['why_no_type2']
  assert 'type2' in attack['attacked']
  # Thresholds from every face: all pairs of different people.
  n = PEOPLE * PER_PERSON
  assert attack['attacked']['num_pool_images'] == n
  assert attack['num_impostor_pairs'] == n * (n - 1) // 2 - PEOPLE * (
      PER_PERSON * (PER_PERSON - 1) // 2)
  # So few test faces cannot rule leakage out: no green light for it.
  levels = {v['risk']: v['level'] for v in report.verdicts(results)}
  assert leak['num_test'] < report.MIN_TEST_FACES
  assert levels['Attribute leakage'] in ('UNCLEAR', 'MODERATE', 'HIGH')
  assert 'LOW' not in levels.values() or levels[
      'Identity reconstruction'] == 'LOW'
  bb = results['blackbox']
  # (steps + 1) x (2 P + 1) queries per target: 3 x 5.
  assert bb['queries_per_target'] == 15
  # Two targets: the verdict compares an array of scores to the threshold.
  assert len(bb['final_score']) == 2


def test_rerun_reuses_finished_parts(audited):
  data, out = audited
  parts = sorted((out / 'parts').iterdir())
  stamps = {p.name: p.stat().st_mtime_ns for p in parts}
  assert cli.main(['audit', '--encoder', 'dlib', '--data', str(data),
                   '--out', str(out), *AUDITED]) == 0
  assert {p.name: p.stat().st_mtime_ns
          for p in (out / 'parts').iterdir()} == stamps
  with open(out / 'audit.json') as f:
    facts = json.load(f)['facts']
  # The page says its time is not the whole audit's.
  assert facts['reused_parts'] == ['leakage', 'attack', 'blackbox']
  assert 'reused from an earlier run' in (out / 'audit.html').read_text()


def test_a_flat_folder_of_photos_is_audited_type_one_only(tmp_path):
  # No identity file and no person subfolders (the first thing most users
  # try): every photo is its own person, only type I is measured, and the
  # report says so.
  _aligned_flat_folder(tmp_path / 'faces', 12)
  out = tmp_path / 'run'
  assert cli.main(['audit', '--encoder', 'dlib', '--data',
                   str(tmp_path / 'faces'), '--out', str(out), *TINY]) == 0
  with open(out / 'audit.json') as f:
    results = json.load(f)
  assert results['facts']['faces'] == 12
  assert results['facts']['people'] is None
  attack = results['attack']
  assert attack['num_targets'] == 2
  assert 'only type I' in attack['why_no_type2']
  assert 'type2' not in attack['attacked']
  assert 'only type I' in (out / 'audit.html').read_text()


def test_bad_input_is_clear_and_writes_nothing(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match='holds no images'):
    cli.main(['audit', '--data', str(empty), '--out', str(tmp_path / 'a'),
              *TINY])
  assert not (tmp_path / 'a' / 'audit.html').exists()
  with pytest.raises(errors.BadInputError,
                     match='not a converted checkpoint'):
    cli.main(['audit', '--encoder', str(empty), '--data', str(empty),
              '--out', str(tmp_path / 'b'), *TINY])
  with pytest.raises(FileNotFoundError, match='no such folder'):
    cli.main(['audit', '--data', str(tmp_path / 'nope'),
              '--out', str(tmp_path / 'c'), *TINY])
  assert not os.path.exists(tmp_path / 'c' / 'audit.html')


_BROWSER = next((b for b in ('chromium', 'chromium-browser', 'google-chrome')
                 if shutil.which(b)), None)


@pytest.mark.skipif(_BROWSER is None, reason='no Chromium (Debian package '
                    '`chromium`; .ci/run installs it where apt can)')
def test_report_renders_offline_in_headless_chromium(audited, tmp_path):
  # The page with a probe appended: once loaded, it writes how many images
  # the browser failed to decode and the rendered height into the DOM.
  _, out = audited
  page = (out / 'audit.html').read_text()
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
  dom = subprocess.run(
      [_BROWSER, *flags, '--dump-dom', probed.as_uri()],
      capture_output=True, text=True, timeout=120, check=True).stdout
  images, broken, height = map(int, re.search(
      r'data-probe="(\d+)/(\d+)/(\d+)"', dom).groups())
  assert images == page.count('<img') and images >= 3
  assert broken == 0 and height > 1000
  shot = tmp_path / 'shot.png'
  subprocess.run([_BROWSER, *flags, f'--screenshot={shot}',
                  '--window-size=1000,800', probed.as_uri()],
                 capture_output=True, timeout=120, check=True)
  pixels = np.asarray(Image.open(shot).convert('L'), np.float32)
  assert pixels.shape == (800, 1000) and pixels.std() > 10  # not blank


def test_equal_budget_by_hand():
  from id2image_jax.evaluation import audit  # pylint: disable=g-import-not-at-top
  # White-box: 3 steps + final = 4 entries, 1 call each, 8 s (2 s each).
  # Black-box: 2 steps + final = 3 entries of 5 queries, 6 s (2 s each).
  out = audit.equal_budget(
      whitebox_history=[[0.1, 0.5, 0.7], [0.3, 0.5, 0.9]],
      whitebox_final=[0.9, 0.9], whitebox_seconds=8.0,
      blackbox_history=[[0.1, 0.2], [0.3, 0.2]], blackbox_final=[0.4, 0.4],
      blackbox_seconds=6.0, queries_per_step=5)
  np.testing.assert_allclose(out['whitebox_curve'], [0.2, 0.5, 0.8, 0.9])
  assert out['whitebox_calls'] == [1, 2, 3, 4]
  assert out['blackbox_calls'] == [5, 10, 15]
  # 4 calls: the black-box has not finished its first step (5 queries).
  assert out['calls'] == 4 and out['blackbox_at_calls'] is None
  assert out['whitebox_at_calls'] == pytest.approx(0.9)
  # 6 s: the white-box is through 3 entries (2 s each).
  assert out['whitebox_at_seconds'] == pytest.approx(0.8)
  assert out['blackbox_at_seconds'] == pytest.approx(0.4)


def test_blackbox_section_compares_at_equal_budgets(audited):
  _, out = audited
  with open(out / 'audit.json') as f:
    equal = json.load(f)['blackbox']['equal_budget']
  # 2 white-box steps + final; 2 NES steps + final of 2 P + 1 = 5 queries.
  assert equal['whitebox_calls'] == [1, 2, 3] and equal['calls'] == 3
  assert equal['blackbox_calls'] == [5, 10, 15]
  assert all(-1 <= c <= 1 for c in equal['whitebox_curve'])
  page = (out / 'audit.html').read_text()
  assert 'data-key="equal_budget/whitebox_at_seconds"' in page


def test_parts_of_another_format_are_redone(tmp_path):
  settings = {'encoder': 'dlib', 'seed': 0}
  parts_lib.Parts(str(tmp_path), settings, version=2).put('attack',
                                                          {'steps': 2})
  assert parts_lib.Parts(str(tmp_path), settings, version=2).get(
      'attack') == {'steps': 2}
  assert parts_lib.Parts(str(tmp_path), settings, version=3).get(
      'attack') is None


def test_part_files_keep_their_names():
  # The tag names the part files on disk: the same settings must give the
  # same tag as before `reports.parts` existed (this value is what
  # jobs/audit.py's own store gave), so audits already run are reused.
  settings = {'encoder': 'dlib', 'seed': 0, 'budget': {'steps': 20},
              'keys': ['a.jpg']}
  assert parts_lib.tag(settings, 2) == '3a17b77992dc'
  assert parts_lib.tag(settings, 3) != parts_lib.tag(settings, 2)


def test_attack_verdicts_rest_on_intervals_not_on_point_rates():
  # 0 of 2 accepted cannot rule the risk out; 0 of 290 can.
  assert report.rate_level(0.0, (0.0, 0.66)) == 'UNCLEAR'
  assert report.rate_level(0.0, (0.0, 0.013)) == 'LOW'
  assert report.rate_level(2 / 3, (0.21, 0.94)) == 'HIGH'
  assert report.rate_level(0.5, (0.09, 0.91)) == 'MODERATE'
  assert report.rate_level(None, None) == 'unknown'

  def results(hits, n):
    rate = hits / n
    entry = {'tmr': rate, 'num_people': n,
             'interval': list(metrics.wilson_interval(hits, n)),
             'threshold': 0.6}
    return {'config': {'fmrs': [0.01, 0.001]},
            'attack': {'num_targets': n, 'evaluation_encoder': 'faceres',
                       'attacked': {'tmr': {'0.001': entry}},
                       'evaluation': {'tmr': {'0.001': entry}}},
            'leakage': {}}
  few = {v['risk']: v for v in report.verdicts(results(0, 2))}
  assert few['Identity reconstruction']['level'] == 'UNCLEAR'
  assert '95 % interval 0% to 66%' in few['Identity reconstruction']['text']
  many = {v['risk']: v for v in report.verdicts(results(0, 290))}
  assert many['Identity reconstruction']['level'] == 'LOW'


def test_leakage_heads_are_chosen_on_validation_people(audited):
  _, out = audited
  with open(out / 'audit.json') as f:
    leak = json.load(f)['leakage']
  # 4 training people: one of them (3 faces) is the validation part; no
  # test person takes part in the choice.
  assert leak['num_validation'] == PER_PERSON and not leak['head_choice']
  for r in [*leak['attributes'].values(), leak['landmarks'],
            leak['histogram']]:
    assert r['head'] in ('mlp', 'linear')
    assert r['validation']['num'] == PER_PERSON
    assert r['leaks'] == r[r['head']]['leaks']
    assert r['gain_ci'] == r[r['head']]['gain_ci']
  page = (out / 'audit.html').read_text()
  assert '<th>head</th><th>paper MLP</th>' in page
  assert 'a linear probe' in page


def _leak_results(head, mlp_leaks, linear_leaks):
  """audit.json's parts for the verdicts: one attribute, the landmarks."""
  def figures(leaks):
    return {'accuracy': 80.0, 'gain_ci': [5.0, 9.0] if leaks else [-2, 9],
            'leaks': leaks, 'nme': 7.0}
  chosen = figures(linear_leaks if head == 'linear' else mlp_leaks)
  r = {**chosen, 'head': head, 'mlp': figures(mlp_leaks),
       'linear': figures(linear_leaks), 'baseline': 70.0,
       'validation': {'head': head, 'l2': 0.1, 'mlp': 70, 'linear': 75,
                      'num': 40}}
  return {'config': {'fmrs': [0.01]}, 'attack': {},
          'leakage': {'attributes': {'Male': r}, 'landmarks': r,
                      'num_test': 500, 'max_attribute_gain': 10.0}}


@pytest.mark.parametrize('head', ['linear', 'mlp'])
def test_verdicts_follow_the_head_chosen_on_validation(head):
  # Only the linear probe shows a leak: the verdict follows whichever head
  # validation chose, not the paper's MLP alone.
  levels = {v['risk']: v for v in report.verdicts(
      _leak_results(head, mlp_leaks=False, linear_leaks=True))}
  geometry = levels['Face geometry (68 landmarks) leakage']
  if head == 'linear':
    assert levels['Attribute leakage']['level'] == 'HIGH'
    assert geometry['level'] == 'HIGH' and 'a linear probe' in (
        geometry['text'])
  else:
    assert levels['Attribute leakage']['level'] == 'LOW'
    assert geometry['level'] == 'LOW' and "the paper's MLP" in (
        geometry['text'])
