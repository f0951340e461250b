#!/bin/bash
# Writes the run.json of the narrow Mask2Former the shapes and DSB2018 runs of docs/mask2former.md use (ResNet-18
# from scratch; pixel decoder 128 wide, 3 deformable layers, feed-forward 512; 6 masked-attention layers, 20 queries,
# feed-forward 512: 13.7 M parameters). The model has no flags of its own, so a run is set up from this record and
# flags: segment train --config FILE --loss mask2former ...
#   bash tools/mask2former_narrow.sh DATA TASK FILE    # TASK: Semantic, Instance or Panoptic; QUERIES=100 for more
set -eu
data=$1; task=$2; file=$3
cat > "$file" <<JSON
{"Data": "$data", "DataOptions": {"Task": "$task"},
 "Model": {"Architecture": "mask2former", "Encoder": {"Name": "resnet18"},
   "Decoder": {"Name": "mask2former-pixel", "Options": {"FeatureSize": 128, "MaskFeatureSize": 128, "Heads": 8,
     "Layers": 3, "FeedForward": 512}},
   "Head": {"Name": "mask2former", "Options": {"Queries": ${QUERIES:-20}, "Layers": 6, "Heads": 8, "FeedForward": 512}}},
 "Trainer": {"Epochs": 40, "BatchSize": 8}}
JSON
