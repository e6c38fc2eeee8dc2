# `make demo` and `make test` work on a fresh machine: each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo-out

.PHONY: setup lint test demo eval-demo bench gpu-site clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	# bytecode for the package, as a non-editable install has (where PYTHONDONTWRITEBYTECODE is set, every
	# process would compile it again: 0.04-0.05 s a start here); a stale file is recompiled in memory
	$(BIN)/python -m compileall -q physiofm
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	$(BIN)/python -m pytest

# The main job, end to end on data the project generates: a DREAMER-layout emotion dataset and a
# Challenge-format ECG archive -> stores -> validation -> brief ECG pretraining -> EEG-only, ECG-only
# and fusion fine-tuning under a subject-wise protocol -> comparison table.  Small encoders (1 layer)
# so that it runs on 2 CPU cores in a few minutes; see the README for what it shows and what it does not.
FT := --protocol kfold-subject --folds 4 --max-steps 40 --batch-size 16 --lr 1e-3 --eeg-layers 1 --ecg-layers 1 --seed 0
demo: setup
	rm -rf $(DEMO)
	$(BIN)/physiofm synth dreamer $(DEMO)/raw/dreamer --subjects 8 --seed 0
	$(BIN)/physiofm synth challenge $(DEMO)/raw/challenge --records 400 --seed 0
	$(BIN)/physiofm build ecg $(DEMO)/raw/challenge $(DEMO)/ecg-store
	$(BIN)/physiofm build emotion $(DEMO)/raw/dreamer $(DEMO)/dreamer-store
	$(BIN)/physiofm validate $(DEMO)/ecg-store
	$(BIN)/physiofm validate $(DEMO)/dreamer-store
	$(BIN)/physiofm pretrain $(DEMO)/ecg-store --out $(DEMO)/runs/ecg-pretrain --max-steps 60 --batch-size 16 --layers 1
	$(BIN)/physiofm finetune $(DEMO)/dreamer-store --out $(DEMO)/runs/eeg-only --modalities eeg $(FT)
	$(BIN)/physiofm finetune $(DEMO)/dreamer-store --out $(DEMO)/runs/ecg-only --modalities ecg --ecg-weights $(DEMO)/runs/ecg-pretrain $(FT)
	$(BIN)/physiofm finetune $(DEMO)/dreamer-store --out $(DEMO)/runs/fusion --modalities eeg,ecg --ecg-weights $(DEMO)/runs/ecg-pretrain $(FT)
	$(BIN)/physiofm report $(DEMO)/runs/eeg-only $(DEMO)/runs/ecg-only $(DEMO)/runs/fusion

# What pretraining buys, on generated data: a PTB-XL-layout archive whose labels shape the beats (SCP codes ->
# waveform morphology) and an unlabelled Challenge-layout archive for pretraining -> stores -> brief dual-masking
# pretraining of a 1-layer ECG encoder -> on PTB-XL's split (folds 1-8 train, 9 validate, 10 test), diagnostic
# superclass (5 labels, multi-label): linear probes of the pretrained encoder and of a random-initialised one, and a
# supervised-from-scratch encoder, each at 10 % and 100 % of the training labels, 2 seeds -> table with bootstrap
# 95 % intervals and label_efficiency.png.  About 7 minutes on 2 CPU cores; see the README, "Evaluating an encoder".
EVAL ?= eval-out
EV := --modalities ecg --targets ptbxl_superclass --protocol ptbxl --mode linear --label-fraction 0.1,1 --seeds 2 \
	--baselines random,scratch --max-steps 150 --batch-size 32 --lr 1e-3 --seed 0
eval-demo: setup
	rm -rf $(EVAL)
	$(BIN)/physiofm synth ptbxl $(EVAL)/raw/ptbxl --records 2000 --seed 0
	$(BIN)/physiofm synth challenge $(EVAL)/raw/challenge --records 1000 --seed 1
	$(BIN)/physiofm build ecg $(EVAL)/raw/ptbxl $(EVAL)/ptbxl-store
	$(BIN)/physiofm build ecg $(EVAL)/raw/challenge $(EVAL)/challenge-store
	$(BIN)/physiofm pretrain $(EVAL)/challenge-store --out $(EVAL)/runs/pretrain --max-steps 200 --batch-size 32 --lr 1e-3 --layers 1
	$(BIN)/physiofm finetune $(EVAL)/ptbxl-store --out $(EVAL)/runs/superclass --ecg-weights $(EVAL)/runs/pretrain $(EV)
	@echo "label-efficiency plot: $(EVAL)/runs/superclass/label_efficiency.png"

bench: setup
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/build_ecg.py
	$(BIN)/python bench/build_dask.py
	$(BIN)/python bench/build_emotion.py --subjects 8
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/index_load.py
	$(BIN)/python bench/encoder.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/feed.py

# For a lent GPU machine (bench/gpu.sh): it has Python 3.12 with PyTorch, NumPy and SciPy but not these packages
# of the store.  Their wheels for CPython 3.12 on x86-64 Linux, at the versions this .venv holds, unpacked (a wheel
# without a .data folder installs by unpacking) and packed with xz: about 40 MB, where the wheels take 62 (the
# device tool carries 64 MiB at most, the working tree included).
GPU_PACKAGES := zarr numcodecs donfig google-crc32c polars polars-runtime-32 webdataset braceexpand isal
GPU_PLATFORMS := $(foreach p,manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64,--platform $(p))
gpu-site: setup
	rm -rf .whl/wheels .whl/site .whl/site-py312.tar.xz
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp $(GPU_PLATFORMS) -d .whl/wheels \
		$$($(BIN)/python -c "import sys; from importlib.metadata import version; print(' '.join(f'{n}=={version(n)}' for n in sys.argv[1:]))" $(GPU_PACKAGES))
	for wheel in .whl/wheels/*.whl; do $(BIN)/python -m zipfile -e $$wheel .whl/site || exit 1; done
	tar -cJf .whl/site-py312.tar.xz -C .whl/site .
	rm -rf .whl/wheels .whl/site
	@ls -l .whl/site-py312.tar.xz

clean:
	rm -rf $(VENV) $(DEMO) bench-out .pytest_cache
