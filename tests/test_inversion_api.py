"""Public API of id2image_jax.inversion: exports and keyword-only options."""

import inspect

import pytest

from id2image_jax import inversion
from id2image_jax.inversion import objective
from id2image_jax.inversion import outputs

_PUBLIC = ([getattr(inversion, n) for n in inversion.__all__] +
           [objective.make_id2image_objective, objective.stylegan2_render,
            objective.encoder_embed, objective.initial_latent,
            outputs.save_images, outputs.image_grid, outputs.save_latents,
            outputs.save_history, outputs.summary, outputs.write_outputs])


@pytest.mark.parametrize('fn', [f for f in _PUBLIC if inspect.isfunction(f)],
                         ids=lambda f: f.__name__)
def test_optional_arguments_are_keyword_only(fn):
  for p in inspect.signature(fn).parameters.values():
    if p.default is not p.empty:
      assert p.kind == p.KEYWORD_ONLY, f'{fn.__name__}({p.name}=...)'


def test_exports_resolve():
  for name in inversion.__all__:
    assert getattr(inversion, name) is not None
