"""``sub-XX.html``: runs, methods, QC, design matrices and first-level maps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fmri_pain.bids.runs import Run
from fmri_pain.report.figures import file_to_uri, glass_brain_uri
from fmri_pain.report.methods import first_level_methods, software_sentence
from fmri_pain.report.render import html_table, markup, render_report
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.trial import difference_contrasts, trial_contrasts

DESIGN_WIDTH = 420
"""Width (pixels) the first level's design-matrix figures are embedded at: smaller than the maps."""


def write_subject_report(subject: str, runs: list[Run], maps, spec: AnalysisSpec,
                         output_dir: Path, preproc_section: str | None = None) -> Path:
    """Write ``OUTPUT_DIR/sub-XX.html``.

    Parameters
    ----------
    subject : str
    runs : list of Run
        The runs analysed (preprocessed).
    maps : SubjectMaps
        The first level's written maps (``maps.table``: subject, session,
        condition, contrast, stat, path).
    spec : AnalysisSpec
    output_dir : path
    preproc_section : str, optional
        HTML fragment of the preprocessing QC (own preprocessing only).
    """
    output_dir = Path(output_dir)
    table = maps.maps
    qc = maps.qc.set_index(["session", "run"]) if not maps.qc.empty else None
    runs_df = pd.DataFrame([{
        "session": r.session or "n/a", "condition": r.condition, "period": r.period,
        "run": r.run, "TR (s)": r.tr, "bold": r.bold.name,
        **(_nuisance_columns(qc.loc[(r.session, r.run)])
           if qc is not None and (r.session, r.run) in qc.index else {}),
    } for r in runs])

    sessions = []
    stim = table[(table["contrast"] == "stim") & (table["stat"] == "z") & (table["level"] == "session")]
    for _, row in stim.sort_values("period", na_position="last").iterrows():
        title = f"ses-{row['session']} ({row['condition']}"
        title += f", period {int(row['period'])})" if pd.notna(row.get("period")) else ")"
        designs = sorted((output_dir / f"sub-{subject}").glob(
            f"ses-{row['session']}/func/*_design.png"))
        sessions.append({"title": title, "map": glass_brain_uri(row["path"], f"{title}: stim z"),
                         "designs": _designs(designs)})
    if not sessions:  # session-less dataset: subject-level stim map
        for _, row in table[(table["stat"] == "z") & (table["contrast"] == "stim")
                            & (table["level"] == "subject")].iterrows():
            designs = sorted((output_dir / f"sub-{subject}").rglob("*_design.png"))
            sessions.append({"title": "all runs", "map": glass_brain_uri(row["path"], "stim z"),
                             "designs": _designs(designs)})

    differences = difference_contrasts(trial_contrasts(spec.conditions))
    subject_z = table[(table["stat"] == "z") & table["level"].isin(["condition", "subject"])]
    contrasts = [{"title": f"{name}: {differences[name].description}",
                  "map": glass_brain_uri(path, f"{name} z")}
                 for name, path in zip(subject_z["contrast"], subject_z["path"]) if name in differences]
    trial_mode = any(r.condition in spec.conditions for r in runs)
    missing = [n for n in differences if n not in set(subject_z["contrast"])] if trial_mode else []

    return render_report(
        "subject.html", output_dir / f"sub-{subject}.html", f"sub-{subject}",
        [("group", "group.html")], subject=subject, runs_table=html_table(runs_df),
        methods=first_level_methods(spec, preprocessed_here=preproc_section is not None,
                                    trial_mode=trial_mode),
        software=software_sentence(), preproc_section=markup(preproc_section),
        sessions=sessions, contrasts=contrasts, missing=", ".join(missing),
        warnings=list(getattr(maps, "warnings", [])),
        nuisance_budget=spec.first_level.confounds.max_nuisance_fraction)


def _designs(paths: list) -> list[dict]:
    """The design-matrix figures, embedded at :data:`DESIGN_WIDTH`."""
    return [{"name": d.name, "uri": file_to_uri(d, max_width=DESIGN_WIDTH)} for d in paths]


_QC_LABELS = {"n_volumes": "volumes", "n_censored": "censored", "strategy": "motion model",
              "n_motion": "motion cols", "n_drift": "drift cols", "n_other": "other cols",
              "dof": "residual dof", "nuisance_fraction": "nuisance dof fraction"}


def _nuisance_columns(row: pd.Series) -> dict:
    """The runs table's first-level columns: volumes, censoring, nuisance columns, dof left."""
    values = {label: row[key] for key, label in _QC_LABELS.items() if key in row.index}
    if "nuisance dof fraction" in values and pd.notna(values["nuisance dof fraction"]):
        values["nuisance dof fraction"] = f"{float(values['nuisance dof fraction']):.0%}"
    return values
