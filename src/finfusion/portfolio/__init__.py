"""Portfolio weights from news + OHLCV (seed 002): train, fine-tune, validate, predict into the lake, backtest, compare.

train_portfolio(cfg, lake, run_dir) -> PortfolioRun                  portfolio.train
finetune_portfolio(cfg, lake, run_dir, base_run) -> PortfolioRun     (metrics: val_loss and base_val_loss)
validate_portfolio(lake, trained, start, end) -> {val_loss, val_sharpe}
load_run(run_dir) / to_parts(trained) / from_parts(state, config)    portfolio.artifacts
predict_weights(lake, run, start=, end=, ...) -> frame               portfolio.predict (writes the WEIGHTS table)
evaluate_weights(weights, bars, evaluation) -> PortfolioEvaluation   portfolio.evaluate
compare_on_synthetic(work_dir) -> {cga, price_only, equal_weight}    portfolio.compare (Sharpe after costs)
"""
