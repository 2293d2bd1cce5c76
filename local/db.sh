#!/usr/bin/env bash
# Corpus locations, the one place to edit (ESPnet's db.sh). Every corpus recipe sources this file.
# Each path can also be given by an environment variable of the same name, which wins:
#   LIBRISPEECH=/data/LibriSpeech egs/librispeech/run.sh
# Nothing is downloaded by the recipes; see each recipe's README.md for what to fetch and how to extract it.
# shellcheck disable=SC2034  # the variables are read by the recipes that source this file

# LibriSpeech: the directory holding LibriSpeech/<part>/... (or the LibriSpeech/ directory itself),
#   parts train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other.
LIBRISPEECH=${LIBRISPEECH:-}

# Common Voice: one extracted release, <root>/<lang>/clips/*.mp3 + train.tsv dev.tsv test.tsv validated.tsv
#   for the languages you use (en de fr es it nl).
COMMONVOICE=${COMMONVOICE:-}

# FLEURS: <root>/<code>/{dev,test}.tsv + audio/<split>/*.wav with code en_us de_de fr_fr es_419 it_it nl_nl
#   (the Hugging Face release; <root>/data/<code>/ and lhotse's download layout are accepted too).
FLEURS=${FLEURS:-}
