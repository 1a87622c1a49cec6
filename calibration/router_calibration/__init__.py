"""Offline calibration of the cascade: outcome logs, a replay simulator on the router's `decide()`, and
`router-calibrate` (fit thresholds to a quality target with a margin that holds on new data)."""
