"""Metrics for papers: FID, KID, precision/recall, IS, PPL, LPIPS and identity similarity.

Entry points (import the submodule; nothing heavy happens at package import):
    metrics.api.run_metrics(...)              everything `pstyle metrics` does (registry: metrics.registry)
    metrics.features.extract_features(...)    pool3 features [N,2048] of uint8 images under a protocol
    metrics.lpips_utils.load_lpips(...)       LPIPS for metrics and as a loss
Protocols are documented in `metrics.resize`.
"""
