#!/usr/bin/env bash
# Every distillation method trains a student on Fashion-MNIST from the CLI: cnn_medium teacher -> cnn_tiny,
# 10,000 training images, 3 epochs, seed 0. A "does it train" record, not a benchmark (see fmnist_gap for that).
# Usage: bash docs/results/methods_fmnist/run.sh TEACHER_CHECKPOINT [OUT_DIR]
set -euo pipefail
T=$1; OUT=${2:-$HOME/aidkd-runs/methods-fmnist}
common=(data.train_subset=10000 train.epochs=3 train.progress=false output.dir=$OUT teacher.checkpoint=$T)
run() { name=$1; shift; [ -e "$OUT/$name/summary.json" ] && return 0; aidkd distill --config fmnist/kd "${common[@]}" output.name=$name "$@" || echo "FAILED: $name"; }
[ -e "$OUT/vanilla/summary.json" ] || aidkd train --config fmnist/kd method.name=vanilla 'method.params={}' teacher.name=null teacher.checkpoint=null teacher.cache=false \
  data.train_subset=10000 train.epochs=3 train.progress=false output.dir=$OUT output.name=vanilla || true
run kd
run kd_ls method.params.logit_standardization=true method.params.temperature=2 method.params.kd_weight=9
run dkd method.name=dkd 'method.params={}' method.params.warmup_epochs=1
run dist method.name=dist 'method.params={}'
run ctkd method.name=ctkd 'method.params={}' method.params.curriculum_epochs=2
run mlkd method.name=mlkd 'method.params={}' teacher.cache=false
# MLKD's class-correlation term scales as B^2/C^3: at batch 128 with 10 classes it is thousands of times its size
# at batch 64 with CIFAR-100's 100 classes (it reached 98 here), and lr 0.05 diverges
run mlkd_lr0.01 method.name=mlkd 'method.params={}' teacher.cache=false optim.lr=0.01
run reviewkd method.name=reviewkd 'method.params={}' teacher.cache=false method.params.warmup_epochs=1
run fitnet method.name=fitnet 'method.params={}' teacher.cache=false
run at method.name=at 'method.params={}' teacher.cache=false
run crd method.name=crd 'method.params={}' teacher.cache=false
run aid_online method.name=aid_online 'method.params={}' teacher.cache=false
aidkd takd --config fmnist/kd "${common[@]}" output.name=takd --assistants cnn_small || true
