"""LALO router: classify, choose a pool and a replica, forward."""
