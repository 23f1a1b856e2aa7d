"""Run a benchmark suite: every tokenizer on the same images, and timed on
the same batch and device, with one cached result file per tokenizer.

    runner = SuiteRunner(load_suite('builtin'), 'work_dirs/benchmark')
    results = runner.run()        # a list of per-tokenizer result dicts

Each result holds ``metrics`` (psnr, ssim, rfid, lpips, num_images),
``costs`` (params and per-image FLOPs, see :func:`cost_summary`) and
``throughput`` (encode/decode images per second, see
:func:`measure_throughput`). A rerun in the same ``out_dir`` reads finished
tokenizers from ``out_dir/results/`` (see :mod:`.cache`); their throughput
is measured again (so every timing in a table comes from one run, on one
device and batch) unless ``reuse_timing=True`` and the stored timing used
the same settings and device.

With ``suite.train`` set (``--train``), every tokenizer is first trained
with the same short budget for each of its seeds (:mod:`.training`); the
metrics are then the mean over the seeds, with ``metrics_std`` (sample
standard deviation) and ``metrics_per_seed`` beside them.
"""
import copy
import datetime
import os
import os.path as osp
import uuid
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from decq_plugin.apis import build_tokenizer_from_config
from decq_plugin.evaluation.inception import LazyFeatureExtractor
from decq_plugin.registry import DATASETS
from decq_plugin.utils.launch import load_config
from .cache import (RESULT_VERSION, digest, load_result, result_key,
                    result_path, write_json_atomic)
from .evaluation import (FeatureStats, ReconstructionScorer, cost_summary,
                         device_name, evaluate_reconstruction, fixed_batch,
                         measure_throughput)
from .preflight import (SetupError, dataset_problem, file_problems,
                        lpips_problem, rfid_problem, tokenizer_problems)
from .suite import BenchmarkSuite, TokenizerEntry
from .training import build_train_dataset, train_tokenizer


def default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def load_entry_config(path: str, cfg_options: Dict[str, object],
                      encoder_weights: Optional[str] = None) -> Config:
    """The entry's config with its ``cfg_options`` merged (dotted keys)
    and, when given, ``encoder_weights`` as its VFM's ``weights_path``."""
    cfg = load_config(path)
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if encoder_weights:
        model = cfg.model
        tok_cfg = model.tokenizer if 'tokenizer' in model else model
        if 'encoder' in tok_cfg:
            tok_cfg.encoder.weights_path = encoder_weights
    return cfg


class SuiteRunner:
    """Evaluates the tokenizers of ``suite`` into ``out_dir``.

    Args:
        suite: what to compare and how.
        out_dir: results (``results/*.json``) and caches go here.
        device: 'cuda', 'cpu', ... (default: cuda when available).
        force: recompute every tokenizer, ignoring stored results.
        reuse_timing: keep the stored throughput of finished tokenizers
            when its batch, repeats, autocast and device match this run's
            (faster reports; timings may then come from different runs).
        progress: show progress bars.
    """

    def __init__(self,
                 suite: BenchmarkSuite,
                 out_dir: str,
                 device: Optional[str] = None,
                 force: bool = False,
                 reuse_timing: bool = False,
                 progress: bool = True) -> None:
        self.suite = suite
        self.out_dir = out_dir
        self.device = torch.device(device or default_device())
        self.force = force
        self.reuse_timing = reuse_timing
        self.progress = progress
        self.run_id = (datetime.datetime.now().strftime('%Y%m%d-%H%M%S-') +
                       uuid.uuid4().hex[:6])
        self._dataset: Optional[Dataset] = None
        self._timing_batch: Optional[torch.Tensor] = None
        self._lpips = None
        self._extractor = None
        self._reference: Optional[FeatureStats] = None
        self._train_dataset: Optional[Dataset] = None

    # -- shared inputs, built on first use ------------------------------------
    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            dataset = DATASETS.build(dict(self.suite.dataset))
            if self.suite.num_images is not None:
                dataset = Subset(dataset, range(min(self.suite.num_images,
                                                    len(dataset))))
            self._dataset = dataset
        return self._dataset

    def loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.suite.batch_size,
                          shuffle=False, num_workers=self.suite.num_workers,
                          collate_fn=default_collate,
                          pin_memory=self.device.type == 'cuda')

    def timing_batch(self) -> torch.Tensor:
        if self._timing_batch is None:
            self._timing_batch = fixed_batch(
                self.dataset, self.suite.throughput['batch_size']).to(
                    self.device)
        return self._timing_batch

    def lpips(self):
        if self._lpips is None:
            from decq_plugin.models.losses.perceptual import LPIPSLoss
            with torch.random.fork_rng(devices=[]):
                # a random trunk (offline mode) must be the same in every
                # run and whichever tokenizer needs it first
                torch.manual_seed(self.suite.seed)
                self._lpips = LPIPSLoss(**self.suite.lpips)
            self._lpips.to(self.device)
        return self._lpips

    def extractor(self) -> LazyFeatureExtractor:
        if self._extractor is None:
            self._extractor = LazyFeatureExtractor(
                self.suite.rfid['feature_extractor'],
                batch_size=self.suite.batch_size, device=str(self.device))
        return self._extractor

    def _reference_path(self) -> str:
        name = digest(dict(dataset=self.suite.dataset,
                           num_images=self.suite.num_images,
                           extractor=self.suite.rfid))[:16]
        return osp.join(self.out_dir, 'cache', f'rfid_reference-{name}.npz')

    def reference(self) -> Optional[FeatureStats]:
        """rFID statistics of the original images, from the cache file
        when an earlier tokenizer (or run) computed them."""
        if self._reference is None and osp.isfile(self._reference_path()):
            with np.load(self._reference_path()) as stats:
                self._reference = (stats['mu'], stats['sigma'])
        return self._reference

    def _store_reference(self, stats: FeatureStats) -> None:
        self._reference = stats
        path = self._reference_path()
        os.makedirs(osp.dirname(path), exist_ok=True)
        tmp = path + '.tmp.npz'
        np.savez(tmp, mu=stats[0], sigma=stats[1])
        os.replace(tmp, path)

    # -- one tokenizer -------------------------------------------------------
    def build(self, entry: TokenizerEntry, cfg: Config,
              seed: Optional[int] = None) -> torch.nn.Module:
        """The tokenizer with its checkpoint, or seeded random weights
        (``seed``, default the suite's)."""
        torch.manual_seed(self.suite.seed if seed is None else seed)
        return build_tokenizer_from_config(cfg.copy(), entry.checkpoint,
                                           device=self.device)

    def train_dataset(self) -> Dataset:
        if self._train_dataset is None:
            self._train_dataset = build_train_dataset(self.suite.train)
        return self._train_dataset

    def timing(self, tokenizer: torch.nn.Module) -> Dict[str, object]:
        """Throughput of ``tokenizer`` on this run's fixed batch."""
        settings = self.suite.throughput
        result = measure_throughput(tokenizer, self.timing_batch(),
                                    settings['warmup'], settings['repeats'],
                                    self.suite.autocast)
        result['run_id'] = self.run_id
        return result

    def evaluate(self, entry: TokenizerEntry, tokenizer: torch.nn.Module
                 ) -> Dict[str, object]:
        """Reconstruction metrics, costs and throughput of one tokenizer."""
        return dict(metrics=self.score(entry, tokenizer),
                    **self._describe(tokenizer))

    def _describe(self, tokenizer: torch.nn.Module) -> Dict[str, object]:
        return dict(costs=cost_summary(tokenizer),
                    throughput=self.timing(tokenizer),
                    image_size=tokenizer.image_size,
                    latent_shapes={k: list(v) for k, v in
                                   tokenizer.latent_shapes.items()})

    def train_and_evaluate(self, entry: TokenizerEntry,
                           cfg: Config) -> Dict[str, object]:
        """Per seed: build, train with the suite's budget, score; the
        metrics are the mean over seeds (see the module docstring)."""
        settings = self.suite.train
        per_seed, training = [], []
        for seed in settings.seeds:
            tokenizer = self.build(entry, cfg, seed)
            training.append(dict(seed=seed, **train_tokenizer(
                tokenizer, self.train_dataset(), settings, seed)))
            per_seed.append(self.score(entry, tokenizer))
        keys = [k for k in per_seed[0] if k != 'num_images']
        mean = {k: float(np.mean([m[k] for m in per_seed])) for k in keys}
        std = {k: float(np.std([m[k] for m in per_seed],
                               ddof=1 if len(per_seed) > 1 else 0))
               for k in keys}
        mean['num_images'] = per_seed[0].get('num_images')
        return dict(metrics=mean, metrics_std=std, metrics_per_seed=per_seed,
                    training=training, train_settings=settings.as_dict(),
                    **self._describe(tokenizer))

    def score(self, entry: TokenizerEntry,
              tokenizer: torch.nn.Module) -> Dict[str, float]:
        """Reconstruction metrics of one tokenizer over the suite's data."""
        metrics = self.suite.metrics
        scorer = ReconstructionScorer(
            metrics,
            lpips=self.lpips() if 'lpips' in metrics else None,
            extractor=self.extractor() if 'rfid' in metrics else None,
            reference=self.reference() if 'rfid' in metrics else None)
        loader = self.loader()
        values, computed = evaluate_reconstruction(
            tokenizer, loader, scorer, self.device, self.suite.autocast,
            desc=entry.name, progress=self.progress, total=len(loader))
        if computed is not None:
            self._store_reference(computed)
        return values

    def _timing_outdated(self, result: dict) -> bool:
        """Whether a stored result needs its throughput measured again:
        always, unless ``reuse_timing`` and its batch, repeats, autocast and
        device are this run's."""
        if not self.reuse_timing:
            return True
        stored = result.get('throughput') or {}
        wanted = dict(self.suite.throughput, autocast=self.suite.autocast,
                      device=str(self.device),
                      device_name=device_name(self.device))
        return any(stored.get(k) != v for k, v in wanted.items())

    # -- the suite ------------------------------------------------------------
    def _plan(self, configs: Dict[str, str],
              problems: Optional[List[str]] = None) -> List[tuple]:
        """``(entry, config, key, stored result or None)`` per tokenizer
        whose config was found; configs that do not load are added to
        ``problems`` (raised when it is None)."""
        plan = []
        for entry in self.suite.tokenizers:
            if entry.name not in configs:
                continue
            weights = (self.suite.encoder_weights
                       if entry.checkpoint is None else None)
            try:
                cfg = load_entry_config(configs[entry.name],
                                        entry.cfg_options, weights)
            except Exception as err:  # syntax errors, bad _base_, ...
                if problems is None:
                    raise
                problems.append(f'tokenizer {entry.name!r}: config '
                                f'{configs[entry.name]!r} does not load '
                                f'({type(err).__name__}: {err})')
                continue
            try:
                key = result_key(cfg.to_dict(), entry.checkpoint,
                                 self.suite.seed, self.suite.data_settings())
            except FileNotFoundError:  # a missing checkpoint, reported
                if problems is None:
                    raise
                plan.append((entry, cfg, None, None))
                continue
            path = result_path(self.out_dir, entry.name)
            stored = None if self.force else load_result(path, key)
            plan.append((entry, cfg, key, stored))
        return plan

    def preflight(self) -> Tuple[Dict[str, str], List[tuple]]:
        """Check everything the run needs before any tokenizer is
        evaluated; raise :class:`SetupError` listing every problem (each
        naming the command-line flag that fixes it). Returns ``({name:
        config path}, plan)`` (see :meth:`_plan`)."""
        configs, problems = file_problems(self.suite)
        data = dataset_problem(lambda: len(self.dataset), self.suite)
        image_size = None
        if data is not None:
            problems.append(data)
        else:
            try:
                image_size = int(self.dataset[0]['inputs'].shape[-1])
            except Exception as err:  # a corrupt first image, ...
                problems.append(f"dataset {self.suite.dataset['type']}: its "
                                f'first image cannot be read '
                                f'({type(err).__name__}: {err})')
        plan = self._plan(configs, problems)
        to_build = [(entry, cfg) for entry, cfg, _, stored in plan
                    if stored is None or self._timing_outdated(stored)]
        problems += tokenizer_problems(to_build, image_size)
        if any(stored is None for *_, stored in plan):
            # build the metric networks now: missing weights are found
            # before the first tokenizer is evaluated
            if 'lpips' in self.suite.metrics:
                problems.append(lpips_problem(self.lpips, self.suite))
            if 'rfid' in self.suite.metrics:
                problems.append(rfid_problem(
                    lambda: self.extractor().extractor, self.suite))
        problems = [p for p in problems if p]
        if problems:
            raise SetupError(problems)
        return configs, plan

    def run(self) -> List[dict]:
        """Evaluate (or read back) every tokenizer, in suite order."""
        configs, plan = self.preflight()
        results: List[dict] = []
        by_key: Dict[str, dict] = {}
        bar = tqdm(plan, desc=self.suite.name, unit='tok',
                   disable=not self.progress)
        for entry, cfg, key, stored in bar:
            bar.set_postfix_str(entry.name)
            twin = by_key.get(key)
            if twin is not None:  # the same tokenizer under another name
                status = f"same as {twin['name']!r}"
                result = dict(copy.deepcopy(twin), same_as=twin['name'])
            elif stored is not None and not self._timing_outdated(stored):
                status = 'stored'
                result = stored
            elif self.suite.train is not None and stored is None:
                status = 'trained, evaluated'
                result = self.train_and_evaluate(entry, cfg)
                result['created'] = datetime.datetime.now().isoformat(
                    timespec='seconds')
            else:
                tokenizer = self.build(entry, cfg)
                if stored is not None:
                    status = 'stored, re-timed'
                    result = dict(stored, throughput=self.timing(tokenizer))
                else:
                    status = 'evaluated'
                    result = self.evaluate(entry, tokenizer)
                    result['created'] = datetime.datetime.now().isoformat(
                        timespec='seconds')
                del tokenizer
                if self.device.type == 'cuda':
                    torch.cuda.empty_cache()
            result.update(
                name=entry.name, key=key, version=RESULT_VERSION,
                config=entry.config, config_path=osp.abspath(
                    configs[entry.name]), checkpoint=entry.checkpoint,
                cfg_options=dict(entry.cfg_options),
                random_weights=(entry.checkpoint is None and
                                self.suite.train is None),
                trained=self.suite.train is not None)
            write_json_atomic(result_path(self.out_dir, entry.name), result)
            by_key.setdefault(key, result)
            results.append(result)
            tqdm.write(f'[{status}] {summary_line(result)}')
        return results


def summary_line(result: dict) -> str:
    """``name: PSNR .. SSIM .. rFID .. LPIPS .. | enc .. img/s, dec ..``."""
    metrics, tp = result['metrics'], result['throughput']
    parts = [f'{k.upper()} {metrics[k]:.4g}'
             for k in ('psnr', 'ssim', 'rfid', 'lpips') if k in metrics]
    return (f"{result['name']}: {' '.join(parts)} | encode "
            f"{tp['encode_images_per_s']:.1f} img/s, decode "
            f"{tp['decode_images_per_s']:.1f} img/s")
