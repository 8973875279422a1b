"""The stage orchestrations the CLI calls: participant, group, permute, demo."""
