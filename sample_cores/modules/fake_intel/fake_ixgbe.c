// SPDX-License-Identifier: GPL-2.0
/*
 * fake_ixgbe: real ixgbe rings (the driver's own headers) on a platform
 * device whose driver is named "ixgbe"; see fake_rx.h.
 * Route: net_device -> ixgbe_adapter (netdev_priv) -> rx_ring[0..num_rx_queues).
 * ixgbe keeps the skb of a frame in progress in the next slot's skb.
 */
#include "ixgbe.h"

#define FAKE_DRIVER "ixgbe"
#define FAKE_PRIV_SIZE sizeof(struct ixgbe_adapter)
#define FAKE_RING struct ixgbe_ring
#define FAKE_BUF struct ixgbe_rx_buffer
#define FAKE_SLOTS rx_buffer_info
#define FAKE_QUEUE queue_index
#define FAKE_SLOT_SKB
#define fake_rx_pg_order(ring) ixgbe_rx_pg_order(ring)
#define fake_set_large(ring) set_bit(__IXGBE_RX_3K_BUFFER, &(ring)->state)
#include "fake_rx.h"

static int fake_setup(struct net_device *netdev, struct device *dev,
		      const struct fake_plan *plans, u16 nplans)
{
	struct ixgbe_adapter *adapter = netdev_priv(netdev);
	u16 q;

	adapter->netdev = netdev;
	for (q = 0; q < nplans; q++) {
		struct ixgbe_ring *ring = kzalloc(sizeof(*ring), GFP_KERNEL);

		if (!ring || fake_ring_init(ring, netdev, dev, q, &plans[q])) {
			kfree(ring);
			return -ENOMEM;
		}
		adapter->rx_ring[q] = ring;
		adapter->num_rx_queues = q + 1;
	}
	return 0;
}

static void fake_teardown(struct net_device *netdev, u16 nplans)
{
	struct ixgbe_adapter *adapter = netdev_priv(netdev);
	int q;

	for (q = 0; q < adapter->num_rx_queues; q++) {
		fake_ring_free(adapter->rx_ring[q]);
		kfree(adapter->rx_ring[q]);
	}
}

MODULE_DESCRIPTION("vmcore-tools test module: ixgbe rx rings with planted page leaks");
