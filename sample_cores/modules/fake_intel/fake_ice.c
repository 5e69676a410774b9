// SPDX-License-Identifier: GPL-2.0
/*
 * fake_ice: real ice rings (the driver's own headers) on a platform device
 * whose driver is named "ice"; see fake_rx.h.
 * Route: net_device -> ice_netdev_priv -> vsi -> rx_rings[0..alloc_rxq); the
 * VSI's back pointer is an ice_pf holding it in vsi[], as in the driver.
 * Before 6.1 the rx ring is a struct ice_ring and its slot keeps the skb of
 * a frame in progress, as ixgbe's does.
 */
#include "ice.h"

#define FAKE_DRIVER "ice"
#define FAKE_PRIV_SIZE sizeof(struct ice_netdev_priv)
#ifdef HAVE_ICE_RX_RING
#define FAKE_RING struct ice_rx_ring
#else
#define FAKE_RING struct ice_ring
#endif
#define FAKE_BUF struct ice_rx_buf
#define FAKE_SLOTS rx_buf
#define FAKE_QUEUE q_index
#ifdef HAVE_ICE_SLOT_SKB
#define FAKE_SLOT_SKB
#endif
#define fake_rx_pg_order(ring) ice_rx_pg_order(ring)
#define fake_set_large(ring) ((ring)->rx_buf_len = ICE_RXBUF_3072)
#include "fake_rx.h"

static int fake_setup(struct net_device *netdev, struct device *dev,
		      const struct fake_plan *plans, u16 nplans)
{
	struct ice_netdev_priv *np = netdev_priv(netdev);
	struct ice_vsi *vsi;
	struct ice_pf *pf;
	u16 q;

	pf = kvzalloc(sizeof(*pf), GFP_KERNEL);
	vsi = kzalloc(sizeof(*vsi), GFP_KERNEL);
	if (!pf || !vsi)
		goto nomem;
	pf->vsi = kcalloc(1, sizeof(*pf->vsi), GFP_KERNEL);
	vsi->rx_rings = kcalloc(nplans, sizeof(*vsi->rx_rings), GFP_KERNEL);
	if (!pf->vsi || !vsi->rx_rings)
		goto nomem;
	pf->num_alloc_vsi = 1;
	pf->vsi[0] = vsi;
	vsi->back = pf;
	vsi->type = ICE_VSI_PF;
	vsi->netdev = netdev;
	np->vsi = vsi;
	for (q = 0; q < nplans; q++) {
		FAKE_RING *ring = fake_ring_new(netdev, dev, q, &plans[q]);

		if (!ring)
			return -ENOMEM;
		ring->vsi = vsi;
		vsi->rx_rings[q] = ring;
		vsi->alloc_rxq = q + 1;
	}
	return 0;
nomem:
	if (pf)
		kfree(pf->vsi);
	if (vsi)
		kfree(vsi->rx_rings);
	kvfree(pf);
	kfree(vsi);
	return -ENOMEM;
}

static void fake_teardown(struct net_device *netdev, u16 nplans)
{
	struct ice_netdev_priv *np = netdev_priv(netdev);
	struct ice_vsi *vsi = np->vsi;
	int q;

	if (!vsi)
		return;
	for (q = 0; q < vsi->alloc_rxq; q++) {
		fake_ring_free(vsi->rx_rings[q]);
		kfree(vsi->rx_rings[q]);
	}
	kfree(vsi->rx_rings);
	kfree(vsi->back->vsi);
	kvfree(vsi->back);
	kfree(vsi);
	np->vsi = NULL;
}

MODULE_DESCRIPTION("vmcore-tools test module: ice rx rings with planted page losses");
