// SPDX-License-Identifier: GPL-2.0
/*
 * fake_iavf: real iavf rings (the driver's own headers) on a platform device
 * whose driver is named "iavf"; see fake_rx.h.  Only built where iavf's
 * ring has page slots (rx_bi): from 6.10 iavf receives through page_pool.
 * Route: net_device -> iavf_adapter (netdev_priv) -> rx_rings, one
 * contiguous array of num_active_queues rings.
 */
#include "iavf.h"

#define FAKE_DRIVER "iavf"
#define FAKE_PRIV_SIZE sizeof(struct iavf_adapter)
#define FAKE_RING struct iavf_ring
#define FAKE_BUF struct iavf_rx_buffer
#define FAKE_SLOTS rx_bi
#define FAKE_QUEUE queue_index
#define fake_rx_pg_order(ring) iavf_rx_pg_order(ring)
#define fake_set_large(ring) ((ring)->rx_buf_len = IAVF_RXBUFFER_3072)
#include "fake_rx.h"

static int fake_setup(struct net_device *netdev, struct device *dev,
		      const struct fake_plan *plans, u16 nplans)
{
	struct iavf_adapter *adapter = netdev_priv(netdev);
	u16 q;

	adapter->netdev = netdev;
	adapter->rx_rings = kcalloc(nplans, sizeof(*adapter->rx_rings), GFP_KERNEL);
	if (!adapter->rx_rings)
		return -ENOMEM;
	for (q = 0; q < nplans; q++) {
		if (fake_ring_init(&adapter->rx_rings[q], netdev, dev, q, &plans[q]))
			return -ENOMEM;
		adapter->num_active_queues = q + 1;
	}
	return 0;
}

static void fake_teardown(struct net_device *netdev, u16 nplans)
{
	struct iavf_adapter *adapter = netdev_priv(netdev);
	int q;

	for (q = 0; adapter->rx_rings && q < nplans; q++)
		fake_ring_free(&adapter->rx_rings[q]);
	kfree(adapter->rx_rings);
	adapter->rx_rings = NULL;
}

MODULE_DESCRIPTION("vmcore-tools test module: iavf rx rings with planted page losses");
