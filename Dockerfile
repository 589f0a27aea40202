# agentarch on a GPU host: CUDA runtime, bubblewrap for the sandbox, a non-root user.
#   docker build -t agentarch .
#   docker run --gpus all --security-opt seccomp=unconfined --security-opt apparmor=unconfined agentarch
# (bubblewrap needs to create user namespaces inside the container; see docs/sandbox.md)
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

# Ubuntu's security updates move package versions, so apt packages are not pinned (hadolint DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip bubblewrap util-linux \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 agentarch
WORKDIR /home/agentarch/agentarch
COPY --chown=agentarch:agentarch . .
USER 1000

# The README's first set-up command, minus the run (scripts/setup picks a CUDA torch when nvidia-smi exists;
# AGENTARCH_TORCH pins one explicitly because nvidia-smi is only mounted at run time).
ARG AGENTARCH_TORCH=torch
ENV AGENTARCH_TORCH=${AGENTARCH_TORCH}
RUN scripts/setup

ENV PATH=/home/agentarch/agentarch/.venv/bin:$PATH
CMD ["agentarch", "run", "--task", "digits"]
