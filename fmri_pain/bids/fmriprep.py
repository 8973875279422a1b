"""fMRIPrep-style derivatives of a run: the preprocessed BOLD of the chosen space, mask, confounds, sidecars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmri_pain.bids import readers as _bids
from fmri_pain.bids.checks import TR_RTOL, Candidate, is_positive_number
from fmri_pain.config.spec import AnalysisSpec


#: The space chosen among several when the spec's ``space`` is null.
FMRIPREP_DEFAULT_SPACE = "MNI152NLin2009cAsym"


def derivative_index(deriv) -> dict[str, list]:
    """The derivative files a run can use, by kind (``bold``, ``mask``, ``confounds``, ``json``), from a pybids index."""
    ext = list(_bids.NIFTI_EXT)
    return {
        "bold": deriv.get(suffix="bold", desc="preproc", extension=ext),
        "mask": deriv.get(suffix="mask", desc="brain", extension=ext),
        "confounds": (deriv.get(suffix="timeseries", desc="confounds", extension=".tsv")
                      + deriv.get(suffix="regressors", desc="confounds", extension=".tsv")),
        "json": deriv.get(suffix="bold", extension=".json"),
    }


def attach_derivatives(c: Candidate, files: dict[str, list], bids_dir: Path, deriv_dir: Path,
                       spec: AnalysisSpec,
                        warnings) -> None:
    """Attach the run's preprocessed BOLD (``spec.space``), mask, confounds and sidecars to ``c``."""
    key = _bids.run_key(c.ents)
    func_dir = deriv_dir / c.raw_bold.parent.relative_to(bids_dir)

    def matches(f, space):
        e = _bids.entities(f)
        return _bids.run_key(e) == key and e.get("space") == space

    spaces = sorted({str(_bids.entities(f).get("space")) for f in files["bold"]
                     if _bids.run_key(_bids.entities(f)) == key and _bids.entities(f).get("space")})
    # space null: the one template space this run has in the derivatives (fMRIPrep's default
    # among several, said in a warning)
    space = spec.space if spec.space is not None else (spaces[0] if len(spaces) == 1 else None)
    if spec.space is None and len(spaces) > 1:
        if FMRIPREP_DEFAULT_SPACE not in spaces:
            c.fail(f"preprocessed BOLD in several template spaces ({', '.join(spaces)}) for this run; "
                   "set 'space' in the spec to choose one", func_dir / c.raw_bold.name)
            return
        space = FMRIPREP_DEFAULT_SPACE
        warnings.append(f"{c.raw_bold.name}: preprocessed BOLD in spaces {', '.join(spaces)}; using "
                        f"{space} (fMRIPrep's default); set 'space' in the spec to choose another")
    bolds = sorted((f for f in files["bold"] if matches(f, space)),
                   key=lambda f: (_bids.entities(f).get("res") is not None, f.path))
    if not bolds:
        if space is None:  # name the file after the space the rest of the derivatives are in
            found = {_bids.entities(f).get("space") for f in files["bold"]} - {None}
            space = found.pop() if len(found) == 1 else "<space>"
        expected = func_dir / _bids.expected_name(
            c.raw_bold, f"space-{space}_desc-preproc_bold.nii.gz")
        c.fail("no preprocessed BOLD in the derivatives for this run"
               + (f" (spaces found: {', '.join(spaces)}; set 'space' in the spec)" if spaces else ""),
               expected)
        return
    if len(bolds) > 1:
        warnings.append(f"{c.raw_bold.name}: {len(bolds)} preprocessed BOLD files in space "
                        f"{space}; using {Path(bolds[0].path).name}")
    chosen = bolds[0]
    c.bold = Path(chosen.path)
    res = _bids.entities(chosen).get("res")
    masks = [f for f in files["mask"] if matches(f, space)
             and _bids.entities(f).get("res") == res]
    if masks:
        c.mask = Path(sorted(m.path for m in masks)[0])
    else:
        warnings.append(f"{c.bold}: no brain mask in the derivatives; stages will compute one")
    confounds = sorted((f for f in files["confounds"]
                        if _bids.run_key(_bids.entities(f)) == key),
                       key=lambda f: (f.get_entities()["suffix"] != "timeseries", f.path))
    if confounds:
        c.confounds = Path(confounds[0].path)
    elif spec.first_level.confounds.strategy != "none":
        c.fail("no confounds TSV in the derivatives for this run (confounds strategy "
               f"{spec.first_level.confounds.strategy!r})",
               func_dir / _bids.expected_name(c.raw_bold, "desc-confounds_timeseries.tsv"))
    # Derivative sidecars override the raw ones; a different TR is a contradiction.
    raw_tr, raw_source = c.metadata.get("RepetitionTime"), c.tr_source
    for path in _bids.nearest(files["json"], _bids.entities(chosen), c.bold.parent, deriv_dir):
        c.merge_sidecar(c.metadata, path)
    new_tr = c.metadata.get("RepetitionTime")
    if is_positive_number(raw_tr) and raw_source is not None:
        c.raw_tr = (float(raw_tr), raw_source)
        if is_positive_number(new_tr) and not np.isclose(raw_tr, new_tr, rtol=TR_RTOL, atol=0):
            c.fail(f"RepetitionTime {raw_tr:g} s here but {new_tr:g} s in the derivative sidecar "
                   f"{c.tr_source.name}", raw_source)
