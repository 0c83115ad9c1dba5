"""Typed configuration: frozen pydantic models loaded from YAML with dotted overrides.

Every stage gets only its own section. Errors are raised before any work starts and
name the file, the key, the value and what was expected, e.g.::

    configs/default.yaml: gfn.train_steps=-3: Input should be greater than 0

Example:
    >>> cfg = load_config("configs/smoke.yaml", overrides=["gfn.train_steps=20"])
    >>> cfg.gfn.train_steps
    20
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

CRYSTAL_LATTICE_SYSTEMS = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal_rhombohedral",
    "trigonal_hexagonal",
    "hexagonal",
    "cubic",
)
"""The 8 crystal-lattice systems: trigonal groups split by their lattice (R vs P)."""
POINT_SYMMETRIES = ("centrosymmetric", "non_centrosymmetric_polar", "non_centrosymmetric_non_polar")
"""Point-symmetry classes: with inversion; without inversion but polar; neither."""
OXIDATION_STATE_RULES = ("per_atom_common", "per_atom_icsd")
"""Charge rules: some per-atom assignment of the element's states sums to zero; pymatgen's common
states, or common and ICSD states together (``aloop.space.composition.oxidation_states``)."""
CHARGE_EXEMPTIONS = ("alloys", "intermetallics")
"""Compositions valid without a charge check: metals only (alloys), or metals with metalloids and at
least one metal (intermetallics, a superset of alloys)."""
ChargeRuleName = Literal["per_atom_common", "per_atom_icsd", "alloys", "intermetallics"]


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message says where and why."""


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Range(Section):
    """A closed interval [min, max]."""

    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.min < self.max:
            raise ValueError(f"min={self.min} must be below max={self.max}")
        return self


class LatticeSettings(Section):
    """Allowed ranges of the lattice parameters (Angstrom, degrees)."""

    length: Range = Range(min=2.0, max=20.0)
    angle: Range = Range(min=60.0, max=140.0)


class SpaceSettings(Section):
    """The crystal parameter space searched by the Crystal-GFN.

    Restrictions (``lattice_systems``, ``point_symmetries``, ``space_groups``) are
    intersected; ``None`` means no restriction.
    """

    elements: list[str] = Field(
        default_factory=lambda: ["Li", "Na", "Mg", "Al", "Si", "P", "S", "O", "F", "Cl",
                                 "Ti", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"],
        min_length=1,
    )
    max_atoms_per_element: int = Field(8, gt=0, le=64)
    max_atoms: int = Field(20, gt=0, le=128)
    max_elements: int = Field(3, gt=0, le=8)
    min_elements: int = Field(2, gt=0, le=8)
    """At least this many distinct elements: 2 leaves out elemental crystals (their E_f is 0 by definition)."""
    charge_rule: tuple[ChargeRuleName, ...] = ("per_atom_icsd", "intermetallics")
    """Charge neutrality: one of ``OXIDATION_STATE_RULES``, plus optionally one of ``CHARGE_EXEMPTIONS``;
    a single name or a list, e.g. ``[per_atom_icsd, alloys]``. The default was chosen by
    ``python -m benchmarks.space_recall`` (README: the charge rules)."""
    lattice_systems: list[Literal[CRYSTAL_LATTICE_SYSTEMS]] | None = None  # type: ignore[valid-type]
    point_symmetries: list[Literal[POINT_SYMMETRIES]] | None = None  # type: ignore[valid-type]
    space_groups: list[int] | None = None
    lattice: LatticeSettings = LatticeSettings()

    @field_validator("charge_rule", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("charge_rule")
    @classmethod
    def _one_state_rule(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        states = [v for v in value if v in OXIDATION_STATE_RULES]
        exemptions = [v for v in value if v in CHARGE_EXEMPTIONS]
        if len(states) != 1 or len(exemptions) > 1:
            raise ValueError(f"{list(value)}: name one of {list(OXIDATION_STATE_RULES)}, optionally with one of "
                             f"{list(CHARGE_EXEMPTIONS)}, e.g. [per_atom_icsd, alloys]")
        return (states[0], *exemptions)

    @model_validator(mode="after")
    def _check(self) -> SpaceSettings:
        from pymatgen.core.periodic_table import Element

        bad = [e for e in self.elements if not Element.is_valid_symbol(e)]
        if bad:
            raise ValueError(f"unknown element symbols {bad}")
        if self.min_elements > self.max_elements:
            raise ValueError(f"min_elements={self.min_elements} exceeds max_elements={self.max_elements}")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"duplicate elements in {self.elements}")
        if self.space_groups is not None:
            out = [g for g in self.space_groups if not 1 <= g <= 230]
            if out:
                raise ValueError(f"space groups {out} are outside 1-230")
        return self


class MPSettings(Section):
    """Materials Project through mp-api; the key is read from ``MP_API_KEY`` only."""

    endpoint: str | None = None
    cache_dir: str = ".aloop/mp_cache"
    max_sites: int = Field(20, gt=0)


class DataSettings(Section):
    """Where the training data comes from."""

    mp: MPSettings = MPSettings()
    local_path: str | None = None
    """Folder in the format of ``mp_cgcnn36k`` (summary.csv.gz + cifs.jsonl.xz)."""
    local_source: str = "mp_legacy"
    """Label source (fidelity) of the local folder's rows; mp_cgcnn36k has legacy, pre-MP2020 corrections."""
    scope: Literal["all", "space", "neighbours"] = "neighbours"
    """Materials Project entries (and labels) the proxy trains on: those inside the space (``space``), those sharing an
    element with it (``neighbours``), or every one (``all``). Measured on the campaign's CHGNet labels
    (benchmarks/results/proxy_campaign_labels.md): ``neighbours`` with ``proxy.cell_scale: false`` predicts the
    substitution arm's proposed crystals far better (MAE 0.157, Spearman 0.70; ``space`` 0.248, 0.67) and beats
    ``space`` on every arm once the campaign has labels, but not on the first round's other arms, where its 90%
    intervals cover 30-46% of labels (``space`` 92-97%). The default since the first Li-Mn-O campaign round: on
    ``space``'s 5 entries the proxy predicted -1.94 eV/atom for every crystal and Li-Mn alloys led the batch (0
    hits in 16 calls); on ``neighbours`` (17,170 rows) it tells them apart (README "Materials Project data and the
    proxy")."""
    max_entries: int | None = Field(None, gt=0)
    """At most this many Materials Project rows, those inside the space first; the campaign's labels are all kept."""
    cold_start_size: int = Field(16, ge=0)
    """Size of the initial space-filling design labelled when no data is available."""


class ProxySettings(Section):
    """The uncertainty-aware surrogate: a sparse variational GP on crystal features (``aloop.proxy``)."""

    target: Literal["formation_energy_per_atom", "band_gap", "stability"] = "stability"
    """What the reward seeks: low formation energy, a band gap near ``acquisition.band_gap_target``, or
    ``stability``: low energy above the hull of known phases and labels (the proxy learns formation energy)."""
    inducing_points: int = Field(256, gt=0)
    hidden_dims: list[int] = Field(default_factory=lambda: [256, 128])
    """Hidden widths of the learned feature extractor (an MLP before the kernel); [] for none."""
    extractor_min_rows: int = Field(1000, ge=0)
    """Fewest training rows for the feature extractor; below, the kernel reads the features directly. An
    extractor fitted on a handful of rows maps every crystal next to them, and the proxy is sure of
    everything (fitted on the 5 MP entries of benchmarks/campaign.py's space, 90% coverage on CHGNet labels of
    random candidates about 0.5 with it, 0.9 without)."""
    prior_std: float = Field(1.0, gt=0)
    """Spread of the target expected before any data, in target units (eV/atom, eV): the target is
    standardised by at least this, so a few similar labels (a small space's stable entries) do not shrink
    the proxy's uncertainty about crystals unlike them."""
    latent_dim: int = Field(16, gt=0)
    """Width of the feature extractor's output, the kernel's input (plus the source one-hot)."""
    kernel: Literal["matern52", "rbf"] = "matern52"
    likelihood: Literal["gaussian", "student_t"] = "student_t"
    """Likelihood of the ELBO fit: ``student_t`` (each source's scale, one learned degrees of freedom) lets the
    few labels far from their chemistry's trend (Materials Project's formation energies have heavy tails) pull
    the fit less; predictions stay Gaussian, their noise recalibrated on the validation rows. Measured on 3,306
    held-out Materials Project entries (benchmarks/results/proxy_fit-no-hull.md): formation energy MAE 0.072 -> 0.062
    eV/atom, band gap 0.382 -> 0.368 eV; held-out Li-Mn-O and Fe-O entries 0.113 -> 0.091."""
    epochs: int = Field(20, gt=0)
    """Passes over the training rows (at least ``min_steps`` optimiser steps). 40 reached held-out Materials Project MAE
    0.0646 eV/atom against 0.0671 with fit seed 0, but 0.0677 against 0.0676 with seed 1 (benchmarks/proxy_fit.py, 3,306
    entries), at twice the fit's time; on campaign v3's first-round labels they rank the crystals by energy above the
    hull about as well (proxy seeds 0-5, benchmarks/results/proxy_campaign_labels-v3-epochs-6seeds.md), and found 10.3
    +- 2.9 novel hits per seed on the scoreboard against 14.7 +- 5.8 (benchmarks/results/campaign-v6-epochs40.md)."""
    min_steps: int = Field(400, ge=0)
    """At least this many optimiser steps, however small the training set (early rounds)."""
    batch_size: int = Field(512, gt=0)
    lr: float = Field(0.01, gt=0)
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the training data held out to measure calibration each round."""
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of the fit's rows kept out of the ELBO to recalibrate the posterior's variance scale and each
    source's noise (0: no recalibration)."""
    validation_split: Literal["chemical_system", "random"] = "chemical_system"
    """How those rows are chosen: whole chemical systems (drawn at random while they fit in the share, topped up
    with random rows) or random rows. By chemical system the intervals widen where the fit never saw the
    chemistry: 90% coverage of held-out Li-Mn-O and Fe-O entries 0.69 -> 0.79, of random held-out rows 0.89 ->
    0.91 (benchmarks/results/proxy_fit-no-hull.md)."""
    space_share: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of every minibatch drawn from the rows inside the space (its Materials Project entries and the
    campaign's labels) when the training set also has rows outside it (``data.scope`` neighbours or all); 0:
    every row alike. At 0.2 the campaign's substitution arm is predicted better and the other arms worse
    (benchmarks/results/proxy_campaign_labels.md), so it is off by default."""
    cell_scale: bool = False
    """Whether the proxy reads the cell's scale (volume per atom, its log, packing fraction). A candidate's cell
    is the generator's guess and its label the energy after relaxation: without the scale a proxy fitted on
    Materials Project predicts proposed crystals about as well as their relaxed structures (the campaign's
    substitution arm, ``data.scope: neighbours``: MAE 0.225 -> 0.157, Spearman 0.41 -> 0.70;
    benchmarks/results/proxy_campaign_labels.md), at the same MAE on Materials Project
    (benchmarks/results/proxy_fit-no-hull.md). With ``placement.volume: predicted`` the placed structure's scale is no
    longer the sampled cell's, so a proxy reading it would score a scale the oracle never sees."""
    correction: bool = True
    """Learn how far the campaign's own labels sit from the rest of the data's prediction (an exact GP on their
    residuals over the element fractions, ``aloop.proxy.correction``) and add it to the predictions of crystals of
    the labelled chemistries, once the campaign has at least 5 labels and other training rows. On campaign v3's
    aloop arm (fitted with its labels of rounds 1-2, predicting its rounds 3-4, seeds 0-2): mean signed error
    -0.360 -> -0.086 eV/atom, MAE 0.404 -> 0.309, Spearman 0.71 -> 0.81, 90% coverage 0.45 -> 0.73
    (benchmarks/results/proxy_campaign_labels-v3.md)."""
    baseline: Literal["none", "hull"] = "none"
    """The GP's prior mean. ``hull``: each label source's hull of its own training rows at the crystal's composition,
    so the GP learns only the distance above it (``aloop.proxy.baseline``); ``none``: the data's mean, with the hull
    read as an input only (``hull_input``). Formation energy and stability only (a band-gap proxy reads no hull).
    The hull as mean and input ranks campaign v3's first-round labels better (Spearman 0.62-0.82 against 0.50-0.75,
    substitution 0.74 against 0.62; energy above the hull +0.08 to +0.33 against -0.29 to -0.11; proxy seeds 0-5,
    benchmarks/results/proxy_campaign_labels-v3-input-only.md) but fits Materials Project worse (held-out MAE 0.067
    against 0.063 eV/atom, 0.141 against 0.087 on every Li-Mn-O and Fe-O entry held out,
    benchmarks/results/proxy_fit.md), and on the scoreboard found 13.0 +- 4.7 novel hits per seed (confirmed 9.8 +-
    3.6) against the input only's 14.2 +- 4.0 (11.2 +- 2.3) over five seeds (benchmarks/results/campaign-v7.md):
    level, so the default is ``none``. Alone, the hull as a mean fails on a chemistry without rows (MAE 1.58)."""
    hull_input: bool = True
    """Give the model the hull of its reference source's training rows at the crystal's composition as two inputs:
    the hull's formation energy and whether a compound lies on it (``aloop.proxy.baseline.HullInput``). Formation
    energy and stability only (a band-gap proxy reads no hull)."""
    hull_dropout: float = Field(0.5, ge=0, lt=1)
    """Share of the training rows, drawn at random, that read the hull (also, ``hull_dropout_mode: copy``) as if nothing
    of their chemistry were known (the elements' hull: 0 eV/atom, no compound; the baseline's too): what teaches the
    model the cold start's chemistries, which it otherwise never meets among rows whose neighbours are known (with
    ``hull_input`` only). With ``hull_input``, on campaign v3's labels (first round, seeds 0-2) the proposed crystals'
    formation energies are ranked better on every arm than with no hull (Spearman 0.53-0.77 -> 0.66-0.82 with the
    hull as mean and input too, benchmarks/results/proxy_campaign_labels-v3-hull.md)."""
    hull_dropout_mode: Literal["copy", "replace"] = "copy"
    """How the ``hull_dropout`` rows are read. ``copy``: twice, with the hull and as a copy without it, so every row
    also teaches the model where the hull is known; ``replace``: only without the hull. With the hull as input only
    (the default), ``copy`` ranks campaign v3's first-round substitution labels above the in-space proxy (Spearman
    0.64 against 0.63, proxy seeds 0-5; benchmarks/results/proxy_campaign_labels-v3-copy.md), where ``replace`` ties
    it (0.62), and found as many hits on the scoreboard: 13.8 +- 4.3 novel hits per seed, confirmed 11.2 +- 2.8,
    against 14.2 +- 4.0 and 11.2 +- 2.3 over five seeds (campaign v8 against v7, benchmarks/results/campaign-v8.md),
    with more of three elements (2.8 against 2.0). It costs 1.5x the fit's steps. With the hull as mean and input
    (``baseline: hull``), ``copy`` found 10.4 +- 2.4 against ``replace``'s 13.0 +- 4.7
    (benchmarks/results/campaign-v6-copy-seeds0-4.md)."""
    reference_source: str | None = None
    """Label source (fidelity) the proxy predicts by default; null: its most frequent training source."""
    threads: int = Field(1, ge=0)
    """Torch threads while fitting (0: torch's default); on a shared 2-core machine two threads ran 10x slower."""


    @model_validator(mode="after")
    def _hull_for_formation_energy(self) -> ProxySettings:
        """The hull is of formation energy: a band-gap proxy reads none, whatever ``baseline`` and ``hull_input``
        say (so ``--set proxy.target=band_gap`` works on any config)."""
        if self.target == "band_gap":
            object.__setattr__(self, "baseline", "none")
            object.__setattr__(self, "hull_input", False)
        return self


def label_property(target: str) -> str:
    """The label a proxy of ``proxy.target`` learns: formation energy for ``stability`` (E_hull = E_f - hull)."""
    return "formation_energy_per_atom" if target == "stability" else target


class AcquisitionSettings(Section):
    """Acquisition function and its mapping to a positive GFlowNet reward."""

    kind: Literal["ucb", "logei", "mean"] = "ucb"
    beta: float = Field(2.0, ge=0)
    band_gap_target: float = Field(1.34, ge=0)
    temperature: float = Field(0.2, gt=0)
    """Reward = exp(acquisition / temperature), clipped; lower is peakier."""
    log_reward_min: float = -20.0
    untemplated_penalty: float = Field(4.0, ge=0)
    """Subtracted from the acquisition (its units: eV/atom for energies) of crystals whose space group and
    anonymous Wyckoff set no placement template has (``placement.templates``): their atoms land at random
    coordinates, which relax far above what the proxy predicts for the composition (0: no penalty)."""


class GFNSettings(Section):
    """Crystal-GFN training and sampling."""

    hidden_dim: int = Field(128, gt=0)
    n_layers: int = Field(2, gt=0)
    n_beta_components: int = Field(6, gt=0)
    train_steps: int = Field(2000, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-2, gt=0)
    lr_logz: float = Field(1e-1, gt=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    """``cosine``: both learning rates decay over each ``train`` call to ``lr_final_fraction`` of their value
    (with ``lr`` 1e-2 and ``temperature`` 2: corr(log frequency, log reward) 0.990 after 2,000 steps on
    ``benchmarks.gfn_correctness``, against 0.68 with 3e-3, 1 and constant)."""
    lr_final_fraction: float = Field(0.01, gt=0, le=1)
    epsilon: float = Field(0.05, ge=0, le=1)
    """Exploration: share of training trajectories drawn whole from the uniform policy."""
    temperature: float = Field(2.0, gt=0)
    """Training trajectories are drawn at this temperature (sampling for a batch is at 1): more exploration."""
    replay_size: int = Field(1000, ge=0)
    replay_fraction: float = Field(0.25, ge=0, le=1)
    min_volume_per_atom: float = Field(7.5, ge=0)
    """Lattice prior: cell volume at least this many Angstrom^3 per atom (0: any valid cell)."""
    min_length_fraction: float = Field(0.5, ge=0, le=1)
    """Lattice prior: each length at least this times the cube root of that minimum volume."""
    wyckoff_prior_weight: float = Field(1.0, ge=0)
    """Weight of the Wyckoff prior, a fixed logit bias from how often known crystals occupy each
    (space group, letter) (pyxtal's Materials Project statistics); 0 turns it off."""
    threads: int = Field(1, ge=0)
    """Torch threads while training and sampling (0: torch's default); one is fastest for these small matrices."""
    device: str = "auto"
    """Where the Crystal-GFN trains and samples: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or
    ``cuda:N``; a GPU this machine lacks is an error here, at load time. The proxy and rewards run on CPU."""

    @field_validator("device")
    @classmethod
    def _device_exists(cls, name: str) -> str:
        if name not in ("auto", "cpu"):  # the common cases need no torch import
            from aloop.hardware import resolve_device

            resolve_device(name)
        return name


class SelectionSettings(Section):
    """Sampling, novelty and diverse batch selection."""

    n_samples: int = Field(10_000, gt=0)
    batch_size: int = Field(32, gt=0)
    chemsys_penalty: float = Field(0.5, ge=0)
    space_group_penalty: float = Field(0.25, ge=0)
    fill_temperatures: list[PositiveFloat] = Field(default_factory=lambda: [2.0, 4.0, 8.0])
    """When the samples hold too few distinct, novel crystals to fill the batch (a generator collapsed onto a few
    crystals), draw ``n_samples`` more at each of these sampling temperatures in turn (above 1 flattens the policy)
    until it fills; ``[]``: send the short batch. A collapsed Li-Mn-O generator's 10,000 samples held 19 distinct
    crystals at temperature 1, 61 at 2, 568 at 4 and 2,645 at 8 (README "A batch that fills")."""
    substitution: bool = False
    """Also rank ion-substitution structures of the Materials Project data (``aloop.substitution``) beside the
    generator's samples, on the same acquisition."""
    substitution_threshold: float = Field(1e-4, gt=0, le=1)
    """Probability threshold of pymatgen's substitution model (its own default: 1e-3)."""
    substitution_share: float | None = Field(1.0, ge=0, le=1)
    """The share of the batch kept for substituted structures, the samples taking the rest (places one side cannot
    fill go to the other); ``None``: both compete on the acquisition alone. 1: the generator's samples fill what
    substitution cannot (README "Ion substitution beside the generator")."""


class OracleSettings(Section):
    """Which oracle labels the batch, its own settings and where it runs."""

    name: str = "chgnet"
    """An ``aloop.oracles`` entry point, or an import path ``package.module:Class``."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Validated by the oracle's own settings model (time limits live there)."""
    executor: Literal["local", "dask"] = "local"
    """``local``: worker threads of this process; ``dask``: the cluster at ``scheduler_address``."""
    scheduler_address: str | None = None
    workers: int | Literal["auto"] = "auto"
    """Local worker threads, or ``auto``: as many as the cores available to this process hold evaluations of the
    oracle's ``torch_threads`` each, so that workers x threads <= cores; one for an oracle without that setting
    (``aloop.executor.local_workers``)."""
    wait: bool = True
    """Wait until every job is done; ``false`` for queued DFT, collected by later rounds."""
    poll_interval_s: float = Field(0.2, gt=0)
    """Pause between polls that found nothing finished (a CHGNet relaxation takes seconds)."""

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value > 0):
            return value
        raise ValueError("expected a number of worker threads above 0, or auto")

    @model_validator(mode="after")
    def _dask_address(self) -> OracleSettings:
        if self.executor == "dask" and not self.scheduler_address:
            raise ValueError("executor 'dask' needs scheduler_address, e.g. tcp://host:8786")
        return self


class PlacementSettings(Section):
    """How a crystal's atoms are placed on its Wyckoff sites (``aloop.space.structure``)."""

    templates: bool = True
    """Take free coordinates from a known structure with the same group and anonymous Wyckoff set when one exists."""
    attempts: int = Field(10, gt=0)
    """pyxtal placements tried (without a template) before the crystal is given up."""
    lattice: Literal["sampled", "template"] = "template"
    """``template``: a templated crystal takes the template's lattice rescaled to its own volume (its shape is
    the one the template's coordinates belong to); ``sampled``: the generator's lattice."""
    volume: Literal["sampled", "predicted"] = "predicted"
    """``predicted``: the placed atoms are scaled, cell and all, so that their shortest bonds take the lengths
    pymatgen's ``DLSVolumePredictor`` expects (the generator's lattice gives the cell's shape);
    ``sampled``: the cell keeps the generator's volume."""
    spread: bool = True
    """Where no template fits and pyxtal cannot place the atoms within its time limit, or lands them in a higher
    group, move every orbit's free coordinates at once until the atoms are apart in the crystal's own group
    (``aloop.space.spread``)."""


class StoreSettings(Section):
    """The experiment database; ``ALOOP_DB_URL`` overrides ``url``."""

    url: str = "sqlite:///aloop.db"
    lock_ttl_s: float = Field(120.0, gt=0)


class TrackingSettings(Section):
    """MLflow; ``MLFLOW_TRACKING_URI`` overrides ``uri``."""

    uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"


class HullSettings(Section):
    """The reference hull of E_hull: known phases of the space's chemical systems, relaxed once by the oracle."""

    known_phases: bool = True
    """False: the hull holds the oracle's elemental references and the campaign's labels only."""
    max_e_above_hull: float = Field(0.05, ge=0)
    """Known phases at most this far above their own data set's hull (eV/atom): the rest cannot be on it."""
    max_sites: int = Field(20, gt=0)
    """Known phases with at most this many sites in their stored cell (relaxation time grows with size)."""


class Config(Section):
    """The whole configuration of a campaign."""

    campaign: str = "default"
    seed: int = 0
    workdir: str = ".aloop"
    """Folder for round outputs (proxy, generator checkpoints, samples), one sub-folder per campaign."""
    review: Literal["auto", "manual"] = "auto"
    space: SpaceSettings = SpaceSettings()
    data: DataSettings = DataSettings()
    proxy: ProxySettings = ProxySettings()
    acquisition: AcquisitionSettings = AcquisitionSettings()
    gfn: GFNSettings = GFNSettings()
    selection: SelectionSettings = SelectionSettings()
    placement: PlacementSettings = PlacementSettings()
    oracle: OracleSettings = OracleSettings()
    hull: HullSettings = HullSettings()
    store: StoreSettings = StoreSettings()
    tracking: TrackingSettings = TrackingSettings()

    @property
    def db_url(self) -> str:
        """The database URL, ``ALOOP_DB_URL`` taking precedence over the file."""
        return os.environ.get("ALOOP_DB_URL") or self.store.url

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI, ``MLFLOW_TRACKING_URI`` taking precedence."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking.uri


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.path=value`` and parse the value as YAML (``200``, ``[Fe, O]``, ``null``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from err
    return key.strip(), value


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            section = _section_fields(".".join(str(p) for p in e["loc"][:-1]))
            lines.append(f"{source}: unknown key {loc!r} (valid keys here: {section})")
        else:
            lines.append(f"{source}: {loc}={value!r}: {e['msg']}")
    return "\n".join(lines)


def _section_fields(dotted: str) -> list[str]:
    model: type[BaseModel] = Config
    for part in filter(None, dotted.split(".")):
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (default ``configs/default.yaml``) and apply ``key=value`` overrides.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or out-of-range value; the
            message names the file (or ``--set``), the key, the value and what was expected.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    source = str(path)
    if overrides:
        for text in overrides:
            _set_dotted(data, *parse_override(text))
        source = f"{path} (with --set {' '.join(overrides)})"
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None
