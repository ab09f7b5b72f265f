"""Seed 002's Cross-Gated Attention portfolio model, one component per file.

timesnet (the market stream's TimesNet encoder), news_lstm (the news stream), cross_gated_attention (the fusion both
ways over the assets) and cga (the whole model, `CGAPortfolio`: one logit per asset).
"""
