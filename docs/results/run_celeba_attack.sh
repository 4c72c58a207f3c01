#!/usr/bin/env bash
# Every run behind the README's "Attack success on CelebA", in order, each
# resumable: rerun this script after an interruption and finished chunks
# are skipped (bash docs/results/keep_stores.sh restore first in a new
# checkout). Then docs/make_celeba_attack.py turns the reports into the
# table, docs/results/celeba_attack.json and docs/attack_vs_steps.png.
#
#   bash docs/results/run_celeba_attack.sh           # all runs
#   bash docs/results/run_celeba_attack.sh id curve  # some of them
#
# Sizes (2-core CPU, float32, MobileStyleGAN at 1024 px, dlib attacked,
# FaceRes independent): see the README for the measured wall times.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=data/celeba-10k-ffhq
EVAL="id2image evaluate --config configs/evaluate.py:celeba --targets $DATA"
HEADS="--set heads.landmarks=runs/leakage_celeba/heads/dlib/landmarks \
  --set heads.histogram=runs/leakage_celeba/heads/dlib/histogram \
  --set heads.image_landmarks=runs/leakage_celeba/heads/image/landmarks_cnn"
wanted=${*:-align id curve terms nes learned_train learned learned30}

for run in $wanted; do
  case $run in
    align)  # FFHQ-aligned copy with dlib's 68 landmarks (~2 min)
      id2image align --data ../shared/data/celeba-10k --out $DATA ;;
    id)  # every test person with two photos, the ID arm, 30 steps
      $EVAL --set num_targets=0 --set arms=id \
        --set "snapshot_steps=(0,5,10,30)" --set transfer_encoders=dlib \
        --out runs/attack_celeba_id ;;
    curve)  # attack vs compute: 50 people, 100 steps, one run
      $EVAL --set num_targets=50 --set arms=id --set steps=100 \
        --set "snapshot_steps=(0,5,10,30,100)" --set transfer_encoders=dlib \
        --out runs/attack_celeba_steps ;;
    terms)  # the paper's extra terms, predicted by the Table 1 heads
      $EVAL --set num_targets=50 --set arms=id+lm,id+lm+hist $HEADS \
        --set transfer_encoders=dlib --out runs/attack_celeba_terms ;;
    nes)  # the score-only attacker (similarity queries, no gradients)
      $EVAL --set num_targets=20 --set arms=nes --set transfer_encoders=dlib \
        --out runs/attack_celeba_nes ;;
    learned_train)  # the learned attack: the ID -> latent head end to end
      id2image regressor --config configs/regressor.py:end_to_end \
        --out runs/regressor_end_to_end ;;
    learned)  # the learned mapping alone: one forward pass, 0 steps
      $EVAL --set num_targets=0 --set arms=id --set steps=0 \
        --set init=runs/regressor_end_to_end/id_to_latent \
        --set transfer_encoders=dlib --out runs/attack_celeba_learned ;;
    learned30)  # as the start of the 30-step optimisation, and the shipped
      # regressor on the same 50 people
      $EVAL --set num_targets=50 --set arms=id \
        --set init=runs/regressor_end_to_end/id_to_latent \
        --set "snapshot_steps=(0,30)" --set transfer_encoders=dlib \
        --out runs/attack_celeba_learned30
      $EVAL --set num_targets=50 --set arms=id \
        --set "snapshot_steps=(0,30)" --set transfer_encoders=dlib \
        --out runs/attack_celeba_shipped30 ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
done
