#!/bin/sh
# One-shot job of the compose stack: create the work pools and register the deployments.
#   cpu: process worker (prep, evaluate, the pipeline flow itself)
#   gpu: process worker in a GPU-reserved container (train); see gpu-docker.json for a
#        docker-type pool that requests the GPU per flow run instead.
set -eu
prefect work-pool create cpu --type process --overwrite
prefect work-pool create gpu --type process --overwrite
cd /opt/vpo
prefect --no-prompt deploy --all
