"""The ACL18 up/down movement models over lag steps, one model per file.

parts (layers they share: tweet encoder, step pooling, temporal head), price (`MovementPrice`, prices only), text
(`MovementText`, tweets only) and fusion (`MovementFusion`, price-queried attention over each step's tweets).
"""
