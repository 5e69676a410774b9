"""Layer 4, the network stack's page holders: NIC rx rings (one module per
driver family), skbs and page_pool.
"""
