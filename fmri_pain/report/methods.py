"""Methods boilerplate and citations generated from what ran.

As fMRIPrep assembles its boilerplate from the ``__desc__`` of the workflows that
ran, each stage here contributes a :class:`MethodsSection` written from the
parameters recorded with its outputs (sidecars, the group result, the
permutation results), never from assumptions about the study. Citations are
pandoc keys (``[@nilearn]``) resolved against one bibliography shipped with the
package (``boilerplate.bib``); :func:`write_citation_files` writes the
boilerplate as ``CITATION.md`` and the cited entries as ``CITATION.bib``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fmri_pain._version import __version__
from fmri_pain.bids.derivatives import dataset_root, software_versions, write_text
from fmri_pain.glm.first_level.model import AR_BINS
from fmri_pain.report.carryover import carryover_methods
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.report.responders import responder_methods

_CITE = re.compile(r"\[(@[A-Za-z0-9_:-]+(?:\s*;\s*@[A-Za-z0-9_:-]+)*)\]")
_ENTRY = re.compile(r"^@(\w+)\{([^,\s]+),\s*$")
_FIELD = re.compile(r"^\s*(\w+)\s*=\s*\{(.*)\},?\s*$")

_CONFOUNDS = {
    "motion24": ("the six head-motion parameters with their temporal derivatives and the squares "
                 "of both (24 regressors) [@friston1996]"),
    "motion6": "the six head-motion parameters",
    "acompcor": ("the 24 motion regressors [@friston1996] and {n} anatomical CompCor "
                 "components [@behzadi2007]"),
    "none": "no confound regressors",
    "auto": ("head-motion regressors chosen per run: the 24-parameter expansion when the nuisance "
             "model then took at most {budget:.0%} of the run's degrees of freedom, else the six "
             "motion parameters (each run's design sidecar records the choice)"),
}

_HRF = {"spm": ("SPM's canonical haemodynamic response function", "friston1998"),
        "glover": ("Glover's haemodynamic response function", "glover1999")}


@dataclass(frozen=True)
class MethodsSection:
    """One stage's paragraph of the methods boilerplate.

    Attributes
    ----------
    stage : str
        The stage that ran (``preprocessing``, ``first level``, ...).
    text : str
        Markdown with pandoc citations (``[@key]`` or ``[@a; @b]``).
    """

    stage: str
    text: str

    @property
    def keys(self) -> list[str]:
        """Citation keys in order of appearance."""
        return [k.strip().lstrip("@") for group in _CITE.findall(self.text) for k in group.split(";")]


# --------------------------------------------------------------------------- bibliography
@functools.lru_cache(maxsize=1)
def bibliography() -> dict[str, dict[str, str]]:
    """The shipped bibliography: key -> fields (plus ``ENTRYTYPE`` and ``source`` text)."""
    text = resources.files("fmri_pain.report").joinpath("boilerplate.bib").read_text()
    entries: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    lines: list[str] = []
    for line in text.splitlines():
        start = _ENTRY.match(line)
        if start:
            current, lines = {"ENTRYTYPE": start[1]}, [line]
            entries[start[2]] = current
            continue
        if current is None:
            continue
        lines.append(line)
        field = _FIELD.match(line)
        if field:
            current[field[1].lower()] = field[2]
        if line.strip() == "}":
            current["source"] = "\n".join(lines)
            current = None
    return entries


def cited_keys(sections: Iterable[MethodsSection]) -> list[str]:
    """Every key cited, in order of first citation; an unknown key is an error."""
    bib = bibliography()
    keys = list(dict.fromkeys(k for s in sections for k in s.keys))
    unknown = [k for k in keys if k not in bib]
    if unknown:
        raise KeyError(f"citation key(s) {unknown} not in fmri_pain/report/boilerplate.bib")
    return keys


def _short(key: str) -> str:
    entry = bibliography()[key]
    authors = [a.strip() for a in entry.get("author", key).split(" and ")]
    first = authors[0].split(",")[0].strip("{} ")
    who = first if len(authors) == 1 else (f"{first} and {authors[1].split(',')[0]}"
                                           if len(authors) == 2 else f"{first} et al.")
    return f"{who}, {entry.get('year', 'n.d.')}"


def render_citations(text: str) -> str:
    """Replace pandoc citations by author-year ones: ``[@nilearn]`` -> ``(Abraham et al., 2014)``."""
    return _CITE.sub(lambda m: "(" + "; ".join(_short(k.strip().lstrip("@"))
                                              for k in m[1].split(";")) + ")", text)


def reference_list(keys: Iterable[str]) -> list[str]:
    """One formatted reference per key."""
    out = []
    for key in keys:
        e = bibliography()[key]
        venue = e.get("journal") or e.get("booktitle") or e.get("publisher", "")
        volume = f" {e['volume']}" if "volume" in e else ""
        pages = f":{e['pages'].replace('--', '-')}" if "pages" in e else ""
        doi = f" doi:{e['doi']}" if "doi" in e else ""
        out.append(f"{e.get('author', '').replace(' and ', ', ')} ({e.get('year', 'n.d.')}). "
                   f"{e.get('title', '')}. {venue}{volume}{pages}.{doi}".replace("\\&", "&"))
    return out


# --------------------------------------------------------------------------- recorded run information
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sidecars(output_dir: Path, pattern: str, subjects: Iterable[str] | None = None) -> list[dict]:
    subs = None if subjects is None else {f"sub-{s}" for s in subjects}
    return [_read_json(p) for p in sorted(Path(output_dir).glob(pattern))
            if subs is None or p.name.split("_")[0] in subs]


def _span(values: list[float], unit: str = "") -> str:
    values = sorted(v for v in values if v is not None)
    if not values:
        return "n/a"
    lo, hi = values[0], values[-1]
    return f"{lo:g}{unit}" if lo == hi else f"{lo:g}-{hi:g}{unit}"


# --------------------------------------------------------------------------- stage paragraphs
def preprocessing_section(output_dir: Path | str, subjects: Iterable[str] | None = None,
                          inputs: Iterable[Path | str] = ()) -> MethodsSection:
    """Where the preprocessed BOLD came from: fmri-pain's own workflows (from their sidecars)
    or another pipeline's derivatives (from its ``dataset_description.json``)."""
    output_dir = Path(output_dir)
    sides = _sidecars(output_dir, "sub-*/**/func/*_desc-preproc_bold.json", subjects)
    if sides:
        pre = sides[0].get("Parameters", {}).get("preprocess", {})
        spatial = [s.get("SpatialReference", {}) for s in sides]
        spaces = sorted({str(s.get("Space")) for s in spatial if s.get("Space")})
        routes = sorted({str(s.get("NormalizationRoute")) for s in spatial if s.get("NormalizationRoute")})
        n_stc = sum(bool(s.get("SliceTimingCorrected")) for s in sides)
        template = next((s.get("Template") for s in spatial if s.get("Template")), "the template")
        stc = (f"slice-timing correction by Fourier phase shift ({n_stc} of {len(sides)} runs; "
               "the others had no SliceTiming or correction was disabled)" if 0 < n_stc < len(sides)
               else "slice-timing correction by Fourier phase shift" if n_stc
               else "no slice-timing correction")
        route_text = {"T1w": "through the subject's T1w (EPI reference to T1w rigid, T1w to template)",
                      "EPI-template": "of the mean EPI directly to the template (no T1w)"}
        how = " or ".join(route_text.get(r, r) for r in routes) or "to the template"
        registration = pre.get("registration", "?")
        interp = next((s.get("Interpolation") for s in spatial if s.get("Interpolation")), None)
        text = (
            f"{len(sides)} BOLD runs were preprocessed with the Nipype workflows [@nipype] of "
            f"fmri-pain {__version__}: rigid head-motion realignment (fmri-pain's Gauss-Newton "
            f"implementation, to a steady-state volume and then to the mean), {stc}, and "
            f"{registration} normalisation with antspyx [@ants] {how}, to {template} "
            f"[@fonov2011], written as space {', '.join(spaces) or '?'}; motion correction and "
            f"normalisation were applied in a single interpolation"
            f"{f' ({interp})' if interp else ''}. Confounds were computed by fmri-pain in fMRIPrep's "
            "format: framewise displacement [@power2012], standardised DVARS (equivalent to "
            "Nipype's compute_dvars) and CompCor components [@behzadi2007] following Nipype's "
            "compute_noise_components.")
        return MethodsSection("preprocessing", text)
    roots = {dataset_root(p) for p in inputs}
    roots.discard(None)
    generators = []
    for root in sorted(roots):
        desc = _read_json(root / "dataset_description.json")
        for gen in desc.get("GeneratedBy", []) or []:
            if isinstance(gen, dict) and gen.get("Name"):
                generators.append(f"{gen['Name']} {gen.get('Version', '')}".strip())
    if not generators:
        return MethodsSection("preprocessing", "Preprocessed BOLD runs were read as given "
                              "(their generator is not recorded in a dataset_description.json).")
    cite = " [@fmriprep]" if any(g.lower().startswith("fmriprep") for g in generators) else ""
    return MethodsSection("preprocessing", "Preprocessed BOLD runs, brain masks and confounds "
                          f"were read from the derivatives of {', '.join(dict.fromkeys(generators))}"
                          f"{cite}; fmri-pain did not preprocess them.")


def _uncensored(designs: list[dict[str, Any]]) -> str:
    """Runs that the ``auto`` rule left uncensored (too many volumes would have gone)."""
    kept = sum(d.get("Censoring") is False for d in designs)
    return (f", except in {kept} run(s) where censoring would have removed more volumes than the "
            "spec's max_censored_fraction (kept uncensored, with a warning)" if kept else "")


def _confounds_text(strategy: str, conf: Mapping[str, Any], designs: list[dict[str, Any]]) -> str:
    """The confound regressors as the runs recorded them (per-run choices of ``auto`` counted)."""
    ran = [d.get("ConfoundsStrategy") for d in designs if isinstance(d.get("ConfoundsStrategy"), str)]
    if not ran:
        return _CONFOUNDS.get(strategy, strategy).format(
            n=conf.get("n_acompcor"), budget=conf.get("max_nuisance_fraction", 0.25))
    counts = {s: ran.count(s) for s in dict.fromkeys(ran)}
    used = "; ".join(_CONFOUNDS.get(s, s).format(n=conf.get("n_acompcor"), budget=0)
                     + (f" in {k} of {len(ran)} runs" if len(counts) > 1 else "")
                     for s, k in counts.items())
    if strategy == "auto":
        used += (" (chosen per run: the 24-parameter expansion when the nuisance model then took at "
                 f"most {conf.get('max_nuisance_fraction', 0.25):.0%} of the run's degrees of freedom, "
                 "else the six motion parameters)")
    return used


def first_level_section(recorded: Mapping[str, Any] | None, spec: AnalysisSpec,
                        designs: list[dict[str, Any]] | None = None,
                        trial_mode: bool = True) -> MethodsSection:
    """The run-level GLM, from the parameters recorded with the subject maps.

    Parameters
    ----------
    recorded : mapping or None
        ``{"first_level": ..., "events": ...}`` as recorded in the subject maps'
        sidecars (:attr:`GroupResult.first_level`); None: the spec's (e.g. the
        subject report, written by the run that made the maps).
    spec : AnalysisSpec
    designs : list of dict, optional
        The run design sidecars (degrees of freedom, censored volumes, and the
        first level's ``DriftModel`` / ``NuisanceRegressors`` when recorded).
    trial_mode : bool
        Per-condition maps and within-subject differences were made.
    """
    current = spec.to_dict()
    rec = dict(recorded or {})
    fl = rec.get("first_level") or current["first_level"]
    ev = rec.get("events") or current["events"]
    conf = fl.get("confounds", {})
    designs = designs or []
    strategy = conf.get("strategy", "none")
    conf_text = _confounds_text(strategy, conf, designs)
    bases = sorted({d["HighPassBasis"] for d in designs if isinstance(d.get("HighPassBasis"), str)})
    if bases:
        drift = "as high-pass filter " + " or ".join(bases)
    elif fl.get("drift_model") == "cosine" and fl.get("high_pass"):
        drift = f"a discrete cosine drift basis with a high-pass cut-off of {1 / fl['high_pass']:.0f} s"
    else:
        drift = f"drift model '{fl.get('drift_model')}'"
    hrf, hrf_key = next(((t, k) for name, (t, k) in _HRF.items()
                         if str(fl.get("hrf_model", "")).startswith(name)),
                        (f"the {fl.get('hrf_model')} basis", None))
    if "derivative" in str(fl.get("hrf_model", "")):
        hrf += " with its temporal derivative" + (" and dispersion" if "dispersion" in fl["hrf_model"] else "")
    hrf += f" [@{hrf_key}]" if hrf_key else ""
    on = ev.get("on_trial_type", ev.get("on"))
    off_type = ev.get("off_trial_type", ev.get("off"))
    off = f"'{off_type}' blocks" if off_type else "the implicit baseline"
    smoothing = fl.get("smoothing_fwhm")
    smooth = (f"smoothed with a {smoothing:g} mm FWHM Gaussian kernel (fmri-pain applies it volume "
              "by volume with the arithmetic of nilearn's smooth_img)"
              if isinstance(smoothing, (int, float)) and smoothing > 0 else "not smoothed")
    scrub = (f" Volumes with framewise displacement above {conf.get('fd_threshold'):g} mm or "
             f"standardised DVARS above {conf.get('std_dvars_threshold'):g} were censored "
             "(removed from the model) [@power2014]" + _uncensored(designs) + "."
             if conf.get("scrub") else "")
    dof = [d.get("ResidualDegreesOfFreedom", d.get("DegreesOfFreedom")) for d in designs]
    dof_text = (f" The {len(designs)} run models kept {_span(dof)} residual degrees of freedom"
                + (f"; {sum(int(d.get('CensoredVolumes') or 0) for d in designs)} volumes were "
                   "censored in total." if conf.get("scrub") else ".") if designs else "")
    noise = ("an AR(1) noise model, with the autocorrelation estimated per voxel and binned into "
             f"{AR_BINS} bins as in nilearn's run_glm [@nilearn; @worsley2002]"
             if fl.get("noise_model") == "ar1"
             else "ordinary least squares (no serial-correlation model)")
    contrasts = fl.get("contrasts") or {}
    extra = (" Further run-level contrasts: " + "; ".join(f"{k} = {v}" for k, v in contrasts.items())
             + "." if contrasts else "")
    combine = ("Runs of a session were combined by precision-weighted fixed effects (fmri-pain's "
               "implementation, equal to nilearn's compute_fixed_effects to 1e-6 in the project's tests)")
    if trial_mode:
        combine += ("; each condition's ON > OFF map combined that condition's runs the same way, "
                    "and within-subject condition differences were linear combinations of the "
                    "condition maps with variance equal to the sum of the squared-weighted variances")
    text = (
        f"Functional data were {smooth}. Each run was modelled with a general linear model: the "
        f"'{on}' events against {off}, convolved with {hrf}, other trial types as "
        f"regressors of no interest, {drift}, and {conf_text}.{scrub} The model was fitted with "
        f"{noise}, computed by fmri-pain's vectorised reimplementation of nilearn's run_glm "
        "(equal to run_glm to 1e-7 in double precision in the project's tests; the pipeline "
        "runs it in single precision, where z maps correlate above 0.999 with nilearn's "
        f"FirstLevelModel on a test run).{dof_text}{extra} {combine}."
    )
    return MethodsSection("first level", text)


def group_section(group: Any, spec: AnalysisSpec) -> MethodsSection:
    """The group models as fitted (routes, terms, subjects, df), mirroring only if it happened,
    and the parametric thresholds."""
    g = spec.group
    parts = []
    by_route: dict[str, list[Any]] = {}
    for entry in group.maps:
        by_route.setdefault(entry.route, []).append(entry)
    nilearn = f"nilearn {software_versions().get('nilearn', '?')}"
    if "one-sample" in by_route:
        maps = by_route["one-sample"]
        intercepts = [m for m in maps if m.key == "intercept"]
        covs = sorted({c for m in maps for c in m.design.covariates})
        parts.append(
            f"Subject maps of {', '.join(m.contrast for m in intercepts)} were tested with one-sample "
            f"t tests over {_span([len(m.design.design) for m in intercepts])} "
            f"subjects (df {_span([m.dof for m in intercepts])})"
            + (f", with the mean-centred covariate(s) {', '.join(covs)}, whose slopes are reported as "
               "their own maps" if covs else "") + ".")
    if "repeated" in by_route:
        maps = by_route["repeated"]
        design = maps[0].design
        names = [m.contrast for m in maps]
        t_names = [n for n in names if n not in ("conditionF", "periodLinear")
                   and not n.startswith("carryover")]
        n_sub = len(maps[0].subjects)
        parts.append(
            f"Condition differences were estimated in one repeated-measures model of all "
            f"{len(design.design)} subject x condition maps of {n_sub} subjects, with terms "
            f"{design.terms} (df {design.residual_dof}); the design follows the crossover "
            f"[@senn2002], with t contrasts "
            f"{', '.join(t_names)}"
            + (", an F test across conditions (conditionF)" if "conditionF" in names else "")
            + (" and the average change per period (periodLinear)" if "periodLinear" in names else "")
            + ".")
    carryover = carryover_methods(group)
    if carryover:
        parts.append(carryover)
    if "paired" in by_route:
        maps = by_route["paired"]
        terms = sorted({m.design.terms for m in maps})
        parts.append(
            f"The paired route tested each within-subject difference map "
            f"({', '.join(m.contrast for m in maps)}) with a one-sample model of terms "
            f"{' or '.join(terms)} over {_span([len(m.design.design) for m in maps])} subjects.")
    for entry in by_route.get("two-group", []) + by_route.get("covariate", []):
        what = ("the difference of the group means, " + " minus ".join(
            c[len("group-"):] for c in entry.design.design.columns if str(c).startswith("group-"))
            if entry.route == "two-group" else "the slope of the mean-centred covariate "
            + str(entry.design.design.columns[1]))
        parts.append(f"The between-subject test {entry.contrast} modelled one map per subject "
                     f"({len(entry.subjects)} subjects; terms {entry.design.terms}; df {entry.dof}) "
                     f"and tested {what}.")
    if not parts:
        parts.append("No group model could be fitted.")
    parts += site_sentences(group.maps)
    parts.append(f"Group models were fitted with {nilearn}'s SecondLevelModel (ordinary least "
                 "squares per voxel) [@nilearn].")
    standardised = [m.contrast for m in group.maps if "dz" in m.paths]
    if standardised:
        parts.append("Each t contrast's group effect is in percent signal change; for "
                     f"{', '.join(dict.fromkeys(standardised))} the standardised effect dz (the effect "
                     "over the model's SD of one subject's contrast value, t / sqrt(n) for a "
                     "one-sample test) [@lakens2013] and Hedges' g = J dz, J = 1 - 3 / (4 df - 1), "
                     "df the error degrees of freedom of the design [@hedges1981], were mapped.")
    if group.mirrored:
        other = "left" if g.flip_to_pain_side == "right" else "right"
        parts.append(f"The maps of {len(group.mirrored)} patient(s) whose pain was on the {other} "
                     f"were mirrored left-right so that every patient's pain is on the "
                     f"{g.flip_to_pain_side}.")
    if any(m.thresholds for m in group.maps):
        parts.append(
            f"Maps were thresholded at FDR q < {g.fdr_q:g} [@benjamini1995; @genovese2002] and "
            f"Bonferroni FWE p < {g.fwe_alpha:g} over the group mask"
            + (f" with a minimum cluster size of {g.min_cluster_size} voxels" if g.min_cluster_size
               else "") + "; cluster peaks were labelled with the Harvard-Oxford [@makris2006], "
            "Juelich [@eickhoff2005] and AAL [@tzourio2002] atlases.")
    if group.warnings:
        parts.append(f"{len(group.warnings)} decision(s) departed from the spec or left data out; "
                     "each is listed in the report and in the sidecars of the maps concerned: "
                     + "; ".join(group.warnings) + ".")
    return MethodsSection("group level", " ".join(parts))


def inference_section(permutations: list[Any], spec: AnalysisSpec) -> MethodsSection | None:
    """Permutation inference as it ran (schemes and numbers of rearrangements of each contrast)."""
    if not permutations:
        return None
    inf = spec.inference
    schemes: dict[str, list[str]] = {}
    counts: list[int] = []
    exhaustive: list[bool] = []
    tfce = cluster = False
    for out in permutations:
        s = out.result.summary(spec.group.fwe_alpha)
        schemes.setdefault(str(s["scheme"]), []).append(out.contrast)
        counts.append(int(s["n_rearrangements"]))
        exhaustive.append(bool(s["exhaustive"]))
        tfce |= out.result.tfce is not None
        cluster |= getattr(out.result, "cluster_size", None) is not None
    scheme_text = "; ".join(f"{k} for {', '.join(v)}" for k, v in schemes.items())
    text = (
        f"Nonparametric inference (fmri-pain's permutation engine; Freedman-Lane "
        f"[@freedman1983; @winkler2014]) used {_span(counts)} rearrangements per contrast, the "
        "observed data included, "
        + ("(every distinct rearrangement once: exact tests) " if all(exhaustive) else
           "(all distinct rearrangements where they numbered no more, else random draws) "
           if any(exhaustive) else "")
        + f"({scheme_text}) with max-statistic family-wise error control [@nichols2002]"
        + (", TFCE (H = 2, E = 0.5) [@smith2009]" if tfce else "")
        + (f" and cluster-extent/mass inference at a cluster-forming p < {inf.cluster_forming_p:g}"
           if cluster else "") + f"; seed {inf.seed}.")
    with_groups = [out.contrast for out in permutations
                   if getattr(out.result, "variance_groups", None)]
    if with_groups:
        text += (f" With one variance group per site, {', '.join(with_groups)} used the G statistic "
                 "(an Aspin-Welch generalisation of t and F whose residual variance differs "
                 "between sites) with max-G family-wise error control and rearrangements that keep "
                 "every map in its site [@winkler2014]; its z maps refer G to t (F) with its "
                 "approximate per-voxel degrees of freedom" + (
                     ", and TFCE enhanced those z maps" if tfce else "")
                 + "; cluster inference was not computed for these contrasts.")
    return MethodsSection("permutation inference", text)


def site_sentences(maps: list[Any]) -> list[str]:
    """What the group models did with the site of a multi-centre trial (none: no sentence)."""
    with_site = [m for m in maps if getattr(m.design, "sites", ())]
    if not with_site:
        return []
    n_sites = len(set(with_site[0].design.sites))
    modelled = [m.contrast for m in with_site
                if any(str(c).startswith("site-") for c in m.design.design.columns)]
    repeated = any(m.route == "repeated" for m in with_site)
    return [f"Subjects came from {n_sites} sites"
            + (f"; site entered the models of {', '.join(modelled)} as mean-centred indicator "
               "columns" if modelled else "")
            + ("; in the repeated-measures model site is between-subject and absorbed by the "
               "subject terms, so it was not added" if repeated else "")
            + "; permutations of whole subjects stayed within site."]


def pathways_section(pathways: Mapping[str, Path] | None) -> MethodsSection | None:
    """The pathway analysis, described by the sidecar of the ROI statistics it wrote."""
    if not pathways:
        return None
    stats = pathways.get("roi_stats")
    desc = _read_json(Path(stats).with_suffix(".json")).get("Description") if stats else None
    text = ("Pain-pathway ROI analysis: " + (desc.rstrip(".") if desc else "ROI effects per node")
            + " (statsmodels [@statsmodels]).")
    for key in ("carryover", "sequence_stats"):  # written with group.carryover
        extra = _read_json(Path(pathways[key]).with_suffix(".json")).get("Description") \
            if key in pathways else None
        if extra:
            text += " " + extra[0].upper() + extra[1:].rstrip(".") + "."
    sizes = pathways.get("effect_sizes")
    if sizes:
        side = _read_json(Path(sizes).with_suffix(".json"))
        text += (f" Effect sizes: {side.get('Description', '').rstrip('.')} [@lakens2013; @hedges1981]; "
                 f"{100 * side.get('ConfidenceLevel', 0.95):g}% intervals: "
                 f"{side.get('IntervalMethod', 'bootstrap')} [@efron1993; @hesterberg2015], "
                 f"{side.get('NumberOfBootstrapResamples')} resamples, seed {side.get('RandomSeed')}.")
    text = " ".join(filter(None, [text, responder_methods(dict(pathways))]))
    return MethodsSection("pathways", text)


def software_section() -> MethodsSection:
    """Software and versions with their references."""
    v = software_versions()
    cites = {"nilearn": "nilearn", "nibabel": "nibabel", "nipype": "nipype", "numpy": "numpy",
             "scipy": "scipy", "scikit-learn": "sklearn", "statsmodels": "statsmodels",
             "dask": "dask", "antspyx": "ants"}
    named = [f"{k} {ver}" + (f" [@{cites[k]}]" if k in cites else "") for k, ver in v.items()]
    return MethodsSection("software", ", ".join(named) + ".")


# --------------------------------------------------------------------------- assembled outputs
def boilerplate(sections: Iterable[MethodsSection | None]) -> list[MethodsSection]:
    """The sections that ran, checked against the bibliography."""
    out = [s for s in sections if s is not None]
    cited_keys(out)
    return out


def citation_markdown(sections: list[MethodsSection], title: str | None = None) -> str:
    """``CITATION.md``: the boilerplate with pandoc citations and the reference list.

    ``title`` (``{version}`` is filled in) replaces "Methods (generated ... from this run)".
    """
    keys = cited_keys(sections)
    title = (title or "Methods (generated by fmri-pain {version} from this run)").format(
        version=__version__)
    lines = [f"# {title}", "",
             "Citations are pandoc keys resolved in CITATION.bib "
             "(`pandoc --citeproc --bibliography CITATION.bib CITATION.md`).", ""]
    for s in sections:
        lines += [f"**{s.stage.capitalize()}.** {s.text}", ""]
    lines += ["## References", ""] + [f"- [@{k}] {r}" for k, r in zip(keys, reference_list(keys))]
    return "\n".join(lines) + "\n"


def citation_bibtex(sections: list[MethodsSection]) -> str:
    """``CITATION.bib``: the bibliography entries cited by ``sections``."""
    bib = bibliography()
    return "\n\n".join(bib[k]["source"] for k in cited_keys(sections)) + "\n"


def write_citation_files(output_dir: Path | str, sections: list[MethodsSection],
                         title: str | None = None) -> dict[str, Path]:
    """Write ``CITATION.md`` (headed ``title``, see :func:`citation_markdown`) and ``CITATION.bib``."""
    output_dir = Path(output_dir)
    return {"md": write_text(citation_markdown(sections, title), output_dir / "CITATION.md"),
            "bib": write_text(citation_bibtex(sections), output_dir / "CITATION.bib")}


# --------------------------------------------------------------------------- report helpers
def first_level_methods(spec: AnalysisSpec, preprocessed_here: bool = False,
                        trial_mode: bool = False) -> str:
    """Paragraph of the subject report: the first level as run with ``spec`` (author-year citations).

    Parameters
    ----------
    spec : AnalysisSpec
        The spec the subject's maps were just made with.
    preprocessed_here : bool
        The BOLD runs were preprocessed by this participant run.
    trial_mode : bool
        Per-condition maps and within-subject differences were made.
    """
    source = ("BOLD runs were preprocessed by fmri-pain's own workflows (see the preprocessing "
              "section). " if preprocessed_here else "Preprocessed BOLD runs were read from "
              "the derivatives given with --derivatives. ")
    return source + render_citations(first_level_section(None, spec, trial_mode=trial_mode).text)


def software_sentence() -> str:
    """One line listing the software versions."""
    return "Software: " + render_citations(software_section().text)
