"""The paper's test protocols as data: what each reported number is computed from.

A protocol fixes a dataset and task, the frames a model is given (p past, f future), the frames it
must produce (n), how many test videos are scored and how many samples are drawn per video (the
frame metrics keep the best sample; FVD is averaged over sample indices), which metrics are
computed and which of them the paper's table shows.

Sources, cited next to each number (files of `voletiv/mcvd-pytorch` unless said otherwise):
  [S] example_scripts/final/sampling_scripts.sh: the evaluation runs (nfp = frames predicted);
  [B] example_scripts/final/base_1f_vidgen.sh and base_1f_vidgen_short.sh, line 17:
      `sampling.preds_per_test=10`, the samples per test video of every evaluation run;
  [D] datasets/__init__.py: `total_videos=256` for the SMMNIST (line 173), KTH (194), Cityscapes
      (206) and UCF-101 (215) test sets; BAIR's test split holds 256 videos (line 184);
  [R] runners/ncsn_runner.py `video_gen`: FVD only for clips of >= 10 frames (lines 1314-1332);
      unconditional generation makes p + n frames (line 1793) and is scored by FVD only, against
      the real p + n frame clips (lines 1970-1980); SMMNIST frames binarised before SSIM (1596);
  [T] example_scripts/final/training_scripts.sh: runs the sampling script does not evaluate;
  [P] the paper (arXiv 2205.09853): the columns of its tables (SMMNIST: FVD, SSIM; BAIR and KTH:
      FVD, PSNR, SSIM; Cityscapes: FVD, LPIPS, SSIM; UCF-101: FVD; interpolation: PSNR, SSIM;
      unconditional generation: FVD) and the 256 test videos of its captions.
"""

from __future__ import annotations

import dataclasses

TASKS = ("prediction", "interpolation", "generation")
FRAME_METRICS = ("mse", "psnr", "ssim", "lpips")
MIN_FVD_FRAMES = 10  # [R]: the reference computes FVD only for clips of at least 10 frames
SAMPLES_PER_VIDEO = 10  # [B]
TEST_VIDEOS = 256  # [D], [P]


@dataclasses.dataclass(frozen=True)
class Protocol:
  """One evaluation setting.

  cond_frames: p past frames given (generation: the p frames the model makes in their place, as
    the reference generates p + n frames). pred_frames: n frames produced after them
    (interpolation: the k frames between past and future). future_frames: f future frames given
    (interpolation only). A test clip is p + n + f frames; FVD sees whole clips, conditioning
    frames included; the frame metrics see only the n produced frames.
  metrics: what is computed; table: the columns of the paper's table, in its order.
  binarize: round frames to black/white before SSIM (SMMNIST, as the reference).
  source: where the numbers come from (see the module docstring).
  """

  name: str
  dataset: str
  task: str
  cond_frames: int
  pred_frames: int
  future_frames: int = 0
  samples_per_video: int = SAMPLES_PER_VIDEO
  num_test_videos: int = TEST_VIDEOS
  metrics: tuple[str, ...] = ()
  table: tuple[str, ...] = ()
  binarize: bool = False
  source: str = ""

  @property
  def clip_frames(self) -> int:
    return self.cond_frames + self.pred_frames + self.future_frames

  @property
  def scored_cond_frames(self) -> int:
    """Leading frames of a clip the frame metrics skip (generation makes all of them)."""
    return 0 if self.task == "generation" else self.cond_frames

  def with_overrides(self, num_test_videos: int = 0, samples_per_video: int = 0,
                     metrics: tuple[str, ...] = ()) -> "Protocol":
    """A copy with the non-zero / non-empty overrides applied (the config's `eval` section)."""
    changes = {}
    if num_test_videos:
      changes["num_test_videos"] = num_test_videos
    if samples_per_video:
      changes["samples_per_video"] = samples_per_video
    if metrics:
      changes["metrics"] = tuple(metrics)
    return dataclasses.replace(self, **changes)


def _metrics(task: str, clip_frames: int) -> tuple[str, ...]:
  fvd = ("fvd",) if clip_frames >= MIN_FVD_FRAMES else ()  # [R]
  return fvd if task == "generation" else FRAME_METRICS + fvd  # [R]: generation is FVD only


# Prediction (dataset, p, n, columns of the paper's table, source).
_PREDICTION = (
    ("smmnist", 5, 10, ("fvd", "ssim"), "[S] lines 42-90 (nfp 10), [P] SMMNIST table"),
    ("kth", 10, 30, ("fvd", "psnr", "ssim"), "[S] lines 104-133 (nfp 30), [P] KTH table"),
    ("kth", 10, 40, ("fvd", "psnr", "ssim"), "[S] lines 104-133 (nfp 40), [P] KTH table"),
    ("kth", 5, 30, ("fvd", "psnr", "ssim"), "[S] lines 136-151: the 5-past-frame runs, nfp 30"),
    ("kth", 5, 40, ("fvd", "psnr", "ssim"), "[S] lines 136-151: the 5-past-frame runs, nfp 40"),
    ("bair", 1, 15, ("fvd", "psnr", "ssim"), "[S] lines 163-193, 236-243 (nfp 15), [P] BAIR table"),
    ("bair", 2, 14, ("fvd", "psnr", "ssim"), "[S] lines 211-231, 250 (nfp 14), [P] BAIR table"),
    ("bair", 2, 28, ("fvd", "psnr", "ssim"), "[S] lines 175-205, 253 (nfp 28), [P] BAIR table"),
    ("cityscapes", 2, 28, ("fvd", "lpips", "ssim"),
     "[S] lines 258-276 (nfp 28 carried over from line 253), [P] Cityscapes table"),
    ("ucf101", 4, 16, ("fvd",), "[S] lines 282-312 (nfp 16), [P] UCF-101 table"),
)

# Interpolation (dataset, p, k, f, source): k = the model's current frames.
_INTERPOLATION = (
    ("smmnist", 5, 5, 5, "[S] line 56 (c5 t5 f5)"),
    ("smmnist", 5, 10, 5, "[S] line 62 (c5 t10 f5)"),
    ("kth", 10, 10, 5, "[S] line 127 (c10 t10 f5)"),
    ("kth", 5, 5, 5, "[S] lines 136, 145 (c5 t5 f5)"),
    ("bair", 1, 5, 1, "[T] lines 156-157 (c1 t5 f1; the sampling script, line 240, says f2)"),
    ("bair", 2, 5, 2, "[S] line 247 (c2 t5 f2)"),
    ("cityscapes", 2, 5, 2, "[T] lines 180-186 (c2 t5 f2)"),
    ("ucf101", 4, 4, 4, "[T] lines 215-219 (c4 t4 f4)"),
)


def _build() -> dict[str, Protocol]:
  table = {}
  for dataset, p, n, columns, source in _PREDICTION:
    binarize = dataset == "smmnist"  # [R]
    pred = Protocol(f"{dataset}_pred_{p}to{n}", dataset, "prediction", p, n,
                    metrics=_metrics("prediction", p + n), table=columns, binarize=binarize,
                    source=source)
    # [R]: a model trained with past masking is also scored on generating p + n frames.
    gen = Protocol(f"{dataset}_gen_{p}+{n}", dataset, "generation", p, n,
                   metrics=_metrics("generation", p + n), table=("fvd",), binarize=binarize,
                   source=f"[R] line 1793 with {source}")
    table[pred.name], table[gen.name] = pred, gen
  for dataset, p, k, f, source in _INTERPOLATION:
    interp = Protocol(f"{dataset}_interp_{p}+{f}to{k}", dataset, "interpolation", p, k, f,
                      metrics=_metrics("interpolation", p + k + f), table=("psnr", "ssim"),
                      binarize=dataset == "smmnist", source=f"{source}, [P] interpolation table")
    table[interp.name] = interp
  return table


PROTOCOLS: dict[str, Protocol] = _build()


def for_dataset(dataset: str) -> list[Protocol]:
  return [p for p in PROTOCOLS.values() if p.dataset == dataset]


def get(name: str) -> Protocol:
  if name not in PROTOCOLS:
    raise ValueError(f"unknown evaluation protocol {name!r}; known: {', '.join(PROTOCOLS)}")
  return PROTOCOLS[name]


def mismatch(protocol: Protocol, num_frames_cond: int, num_frames: int, num_frames_future: int,
             tasks: tuple[str, ...]) -> str | None:
  """Why a model (its frame counts and the tasks its training masks teach) cannot run `protocol`,
  or None when it can."""
  if protocol.task not in tasks:
    return f"the model was not trained for {protocol.task} (it learns {', '.join(tasks)})"
  if protocol.cond_frames != num_frames_cond:
    return (f"it conditions on {protocol.cond_frames} past frames but model.num_frames_cond="
            f"{num_frames_cond}")
  if protocol.task == "interpolation":
    if protocol.future_frames != num_frames_future:
      return (f"it gives {protocol.future_frames} future frames but model.num_frames_future="
              f"{num_frames_future}")
    if protocol.pred_frames != num_frames:
      return f"it fills {protocol.pred_frames} frames but model.num_frames={num_frames}"
  return None

