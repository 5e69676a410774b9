// SPDX-License-Identifier: GPL-2.0
/*
 * fake_i40e: real i40e driver structures with a planted rx-buffer leak.
 *
 * Compiled against the i40e driver's own headers from the kernel's
 * linux-source, so struct i40e_pf / i40e_vsi / i40e_ring / i40e_rx_buffer in
 * this module's DWARF are the real ones.  It binds, as a pci_driver named
 * "i40e", to QEMU's "edu" test device, so both routes an analyzer takes to
 * the rings exist:
 *   pci_dev (driver "i40e") -> drvdata i40e_pf -> vsi[] -> rx_rings[]
 *   net_device -> i40e_netdev_priv -> vsi -> rx_rings[]
 * Each edu device is a port (a PF) of its own, with its own address, as
 * the two ports of an X710 are: 3c:fd:fe:00:40:0e, then :0f, ...
 *
 * Rings are filled as i40e_alloc_mapped_page() fills them (dev_alloc_pages,
 * dma_map_page_attrs, page_ref_add(USHRT_MAX - 1) with pagecnt_bias
 * USHRT_MAX) or, for the "old scheme" ring, as 4.11-era and out-of-tree 2.x
 * drivers did (count 1, bias 1, topped up to USHRT_MAX when bias reaches 0).
 * Received frames are written at the buffer's page_offset and the buffer is
 * flipped and recycled into next_to_alloc as i40e_reuse_rx_page() does.
 *
 * The leak: the out-of-tree 2.3.6 driver consumed a ring slot for every
 * Flow Director programming-status descriptor without recycling its buffer;
 * a later recycle into next_to_alloc overwrote the slot, and the page was
 * lost with all its references.  We replay exactly that.  Each lost page is
 * recorded once ("fake_i40e: leaked pfn=...", vmct_truth.h: a debugfs file
 * the guest copies, complete at any scale); the module keeps no pointer or
 * address of it anywhere.
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/etherdevice.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include "i40e.h"
#include "vmct_truth.h"

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8

/*
 * How many programming-status descriptors each ring sees.  Every one of them
 * strands a page in its slot; the page is lost when a later recycle overwrites
 * that slot, which the replay below makes happen for all but the last few.
 * The truth record (vmct_truth.h), not these numbers, is the ground truth.
 */
static int order0_status = 24;	/* new-scheme order-0 ring, frames inside */
module_param(order0_status, int, 0444);
static int order1_status = 8;	/* new-scheme order-1 ring (3K buffers) */
module_param(order1_status, int, 0444);
static int fresh_status = 6;	/* old-scheme ring, never-used pages: refcount 1 */
module_param(fresh_status, int, 0444);
static int packets = 700;	/* frames received per ring before the leaks */
module_param(packets, int, 0444);
/*
 * The seed's shape: after the planted leaks, keep receiving Flow Director
 * status descriptors on eth2's order-0 and order-1 rings (three order-0 ones
 * to one order-1) until this percentage of RAM is lost, as the 2.3.6 driver
 * lost memory for a week.  0: off.
 */
static int leak_pct;
module_param(leak_pct, int, 0444);
static unsigned long leaked_pages;	/* so far, counted by report_leak() */

enum bias_scheme { BIAS_NEW, BIAS_OLD };

struct ring_plan {
	u16 count;
	u16 rx_buf_len;
	enum bias_scheme scheme;
	int *status;
};

static const u8 peer_mac[ETH_ALEN] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
static u32 frame_seq;

static unsigned int fake_rx_offset(struct i40e_ring *ring)
{
	return ring_uses_build_skb(ring) ? I40E_SKB_PAD : 0;
}

/* i40e_alloc_mapped_page(), with the bias scheme of the ring. */
static bool fake_alloc_mapped_page(struct i40e_ring *ring, struct i40e_rx_buffer *bi,
				   enum bias_scheme scheme)
{
	struct page *page = bi->page;
	dma_addr_t dma;

	if (page) {
		ring->rx_stats.page_reuse_count++;
		return true;
	}
	page = dev_alloc_pages(i40e_rx_pg_order(ring));
	if (!page) {
		ring->rx_stats.alloc_page_failed++;
		return false;
	}
	dma = dma_map_page_attrs(ring->dev, page, 0, i40e_rx_pg_size(ring),
				 DMA_FROM_DEVICE, I40E_RX_DMA_ATTR);
	if (dma_mapping_error(ring->dev, dma)) {
		__free_pages(page, i40e_rx_pg_order(ring));
		ring->rx_stats.alloc_page_failed++;
		return false;
	}
	bi->dma = dma;
	bi->page = page;
	bi->page_offset = fake_rx_offset(ring);
	if (scheme == BIAS_NEW) {
		page_ref_add(page, USHRT_MAX - 1);
		bi->pagecnt_bias = USHRT_MAX;
	} else {
		bi->pagecnt_bias = 1;
	}
	return true;
}

static void report_leak(struct i40e_ring *ring, struct page *page)
{
	leaked_pages += 1UL << i40e_rx_pg_order(ring);
	vmct_truth_leak(page_to_pfn(page), i40e_rx_pg_order(ring), page_ref_count(page),
			ring->netdev ? netdev_name(ring->netdev) : "vsi-without-netdev", ring->queue_index);
}

/*
 * i40e_reuse_rx_page(): move the buffer to next_to_alloc.  When that slot
 * still holds a page (it was consumed by a programming-status descriptor and
 * never recycled), the page is overwritten: that is the leak.  When it is
 * the buffer's own slot, i40e_put_rx_buffer()'s "rx_buffer->page = NULL"
 * loses the buffer itself.
 */
static bool ring_holds(struct i40e_ring *ring, struct page *page)
{
	u16 i;

	for (i = 0; i < ring->count; i++)
		if (ring->rx_bi[i].page == page)
			return true;
	return false;
}

static void fake_reuse_rx_page(struct i40e_ring *ring, struct i40e_rx_buffer *old)
{
	u16 nta = ring->next_to_alloc;
	struct i40e_rx_buffer *new = &ring->rx_bi[nta];
	struct page *overwritten = new->page, *moved = old->page;

	nta++;
	ring->next_to_alloc = nta < ring->count ? nta : 0;
	new->dma = old->dma;
	new->page = old->page;
	new->page_offset = old->page_offset;
	new->pagecnt_bias = old->pagecnt_bias;
	old->page = NULL;
	/* A page is lost when no slot holds it any more: the one overwritten
	 * in next_to_alloc, or -- when next_to_alloc caught up with
	 * next_to_clean (the status descriptors desynchronized them) -- the
	 * buffer itself, "recycled" into its own slot and then cleared. */
	if (overwritten && overwritten != moved && !ring_holds(ring, overwritten))
		report_leak(ring, overwritten);
	if (!ring_holds(ring, moved))
		report_leak(ring, moved);
}

/* The Ethernet and IPv4 headers of a frame from peer_mac to @dev (broadcast
 * where there is none), @l4_len bytes after the IP header. */
static struct iphdr *write_eth_ip(u8 *data, const struct net_device *dev, u8 protocol,
				  unsigned int l4_len)
{
	struct ethhdr *eth = (struct ethhdr *)data;
	struct iphdr *ip = (struct iphdr *)(eth + 1);

	if (dev)
		ether_addr_copy(eth->h_dest, dev->dev_addr);
	else
		eth_broadcast_addr(eth->h_dest);
	ether_addr_copy(eth->h_source, peer_mac);
	eth->h_proto = htons(ETH_P_IP);
	memset(ip, 0, sizeof(*ip));
	ip->version = 4;
	ip->ihl = 5;
	ip->ttl = 64;
	ip->protocol = protocol;
	ip->saddr = htonl(0x0a000002);
	ip->daddr = htonl(0x0a000009);
	ip->tot_len = htons(sizeof(*ip) + l4_len);
	return ip;
}

/* A UDP/IPv4 frame addressed to the netdev, as the NIC would DMA it. */
static void write_frame(struct i40e_ring *ring, struct i40e_rx_buffer *bi)
{
	u8 *data = page_address(bi->page) + bi->page_offset;
	struct udphdr *udp = (struct udphdr *)(data + ETH_HLEN + sizeof(struct iphdr));
	char *payload = (char *)(udp + 1);
	int len;

	dma_sync_single_range_for_cpu(ring->dev, bi->dma, bi->page_offset, 256,
				      DMA_FROM_DEVICE);
	len = scnprintf(payload, 64, "vmcore-tools fake_i40e frame %u", frame_seq++);
	write_eth_ip(data, ring->netdev, IPPROTO_UDP, sizeof(*udp) + len);
	udp->source = htons(4789);
	udp->dest = htons(4789);
	udp->len = htons(sizeof(*udp) + len);
}

/*
 * One received frame at next_to_clean: the stack takes one of the ring's
 * references (pagecnt_bias--) and drops it when the skb is freed; the buffer
 * is flipped to the other half and recycled (i40e_put_rx_buffer).
 */
static void fake_receive(struct i40e_ring *ring, enum bias_scheme scheme)
{
	struct i40e_rx_buffer *bi = &ring->rx_bi[ring->next_to_clean];
	struct page *page = bi->page;

	if (!page) {	/* a slot the driver never refilled: the NIC skips it */
		ring->next_to_clean = (ring->next_to_clean + 1) % ring->count;
		return;
	}
	write_frame(ring, bi);
	bi->pagecnt_bias--;			/* reference handed to the skb */
	if (scheme == BIAS_OLD && !bi->pagecnt_bias) {
		page_ref_add(page, USHRT_MAX);	/* old scheme's top-up */
		bi->pagecnt_bias = USHRT_MAX;
	}
	put_page(page);				/* the skb is consumed and freed */
	/* i40e_can_reuse_rx_page(): a new-scheme buffer whose bias has run
	 * down to its last reference is restocked before it is reused (without
	 * it, a page that stays in the ring for 65534 frames is freed while
	 * its slot still holds it) */
	if (scheme == BIAS_NEW && bi->pagecnt_bias == 1) {
		page_ref_add(page, USHRT_MAX - 1);
		bi->pagecnt_bias = USHRT_MAX;
	}
	bi->page_offset ^= i40e_rx_pg_size(ring) / 2;
	fake_reuse_rx_page(ring, bi);
	ring->next_to_clean = (ring->next_to_clean + 1) % ring->count;
	ring->rx_stats.page_reuse_count++;
	/* i40e_alloc_rx_buffers(ring, cleaned_count = 1) */
	fake_alloc_mapped_page(ring, &ring->rx_bi[ring->next_to_use], scheme);
	ring->next_to_use = (ring->next_to_use + 1) % ring->count;
}

/*
 * A Flow Director programming-status descriptor as 2.3.6 handled it: the
 * slot is consumed, but neither recycled nor counted for refill.
 */
static void fake_programming_status(struct i40e_ring *ring)
{
	ring->next_to_clean = (ring->next_to_clean + 1) % ring->count;
}

static struct i40e_ring *fake_ring(struct i40e_vsi *vsi, struct device *dev, u16 q,
				   const struct ring_plan *plan)
{
	struct i40e_ring *ring = kzalloc(sizeof(*ring), GFP_KERNEL);
	u16 i;

	if (!ring)
		return NULL;
	ring->vsi = vsi;
	ring->netdev = vsi->netdev;
	ring->dev = dev;
	ring->queue_index = q;
	ring->reg_idx = vsi->base_queue + q;
	ring->count = plan->count;
	ring->rx_buf_len = plan->rx_buf_len;
	ring->size = ALIGN(ring->count * 32, 4096);	/* 32-byte descriptors */
	set_ring_build_skb_enabled(ring);
#ifdef HAVE_RX_OFFSET
	ring->rx_offset = fake_rx_offset(ring);
#endif
	ring->rx_bi = kcalloc(ring->count, sizeof(*ring->rx_bi), GFP_KERNEL);
	if (!ring->rx_bi) {
		kfree(ring);
		return NULL;
	}
	/* i40e_configure_rx_ring + i40e_alloc_rx_buffers(ring, I40E_DESC_UNUSED) */
	for (i = 0; i < ring->count - 1; i++)
		fake_alloc_mapped_page(ring, &ring->rx_bi[i], plan->scheme);
	ring->next_to_use = ring->count - 1;
	ring->next_to_alloc = ring->count - 1;
	ring->next_to_clean = 0;
	return ring;
}

/* Traffic, then the planted leaks: each status descriptor loses one page. */
static void fake_traffic(struct i40e_ring *ring, const struct ring_plan *plan)
{
	int n, status = *plan->status;

	if (plan->scheme == BIAS_NEW)
		for (n = 0; n < packets; n++)
			fake_receive(ring, plan->scheme);
	for (n = 0; n < status; n++) {
		fake_programming_status(ring);
		fake_receive(ring, plan->scheme);
		fake_receive(ring, plan->scheme);
	}
	/* a few more frames so the ring is in a normal steady state */
	if (plan->scheme == BIAS_NEW)
		for (n = 0; n < 17; n++)
			fake_receive(ring, plan->scheme);
}

/* Status descriptors on both rings until leak_pct percent of RAM is lost. */
static void fake_leak_until(struct i40e_ring *order0, struct i40e_ring *order1)
{
	unsigned long goal = DIV_ROUND_UP(totalram_pages() * leak_pct, 100), before, idle = 0;
	u64 n;

	for (n = 0; leaked_pages < goal && idle < 1000000; n++) {
		struct i40e_ring *ring = n % 4 == 3 ? order1 : order0;

		before = leaked_pages;
		fake_programming_status(ring);
		fake_receive(ring, BIAS_NEW);
		fake_receive(ring, BIAS_NEW);
		idle = leaked_pages == before ? idle + 1 : 0;
		if (!(n & 0xfff))
			cond_resched();
	}
	pr_info("fake_i40e: leaked %lu pages of %lu (%d%% asked)\n", leaked_pages, totalram_pages(),
		leak_pct);
}

static void report_parked(struct i40e_ring *ring, struct page *page, const char *kind)
{
	pr_info("fake_i40e: parked pfn=%lu order=%u refcount=%d kind=%s ring=%s/%u\n",
		page_to_pfn(page), compound_order(page), page_ref_count(page), kind,
		ring->netdev ? netdev_name(ring->netdev) : "vsi-without-netdev",
		ring->queue_index);
}

/*
 * The buffer at next_to_clean leaves the ring without being recycled
 * (i40e_can_reuse_rx_page() said no, e.g. a page from a remote node): the
 * ring drops its remaining references and empties the slot; the one
 * reference handed out (pagecnt_bias--) is now the page's only holder.
 */
static struct page *fake_take_buffer(struct i40e_ring *ring, u8 **va)
{
	struct i40e_rx_buffer *bi = &ring->rx_bi[ring->next_to_clean];
	struct page *page = bi->page;

	if (!page)
		return NULL;
	write_frame(ring, bi);
	*va = page_address(page) + bi->page_offset;
	bi->pagecnt_bias--;
	dma_unmap_page_attrs(ring->dev, bi->dma, i40e_rx_pg_size(ring),
			     DMA_FROM_DEVICE, I40E_RX_DMA_ATTR);
	__page_frag_cache_drain(page, bi->pagecnt_bias);
	bi->page = NULL;
	ring->next_to_clean = (ring->next_to_clean + 1) % ring->count;
	return page;
}

/*
 * A frame still being built when memory is dumped: its first buffer has
 * arrived, its last has not.  Before 6.4 the ring keeps the frame in
 * ring->skb (i40e_build_skb() on the buffer), and the skb may be the page's
 * only holder.  From 6.4 the frame is ring->xdp, an xdp_buff whose buffers
 * stay in their slots from next_to_clean to next_to_process until the frame
 * is complete.
 */
static void fake_park_frame(struct i40e_ring *ring)
{
	unsigned int headroom = fake_rx_offset(ring);
	unsigned int truesize = i40e_rx_pg_size(ring) / 2;
#ifdef HAVE_RING_XDP_BUFF
	struct i40e_rx_buffer *bi = &ring->rx_bi[ring->next_to_clean];
	u8 *va;

	if (!bi->page)
		return;
	write_frame(ring, bi);
	va = page_address(bi->page) + bi->page_offset;
	xdp_init_buff(&ring->xdp, truesize, &ring->xdp_rxq);
	xdp_prepare_buff(&ring->xdp, va - headroom, headroom, 128, true);
	ring->next_to_process = (ring->next_to_clean + 1) % ring->count;
	report_parked(ring, bi->page, "xdp");
#else
	struct sk_buff *skb;
	struct page *page;
	u8 *va;

	page = fake_take_buffer(ring, &va);
	if (!page)
		return;
	skb = build_skb(va - headroom, truesize);
	if (!skb) {
		put_page(page);
		return;
	}
	skb_reserve(skb, headroom);
	__skb_put(skb, 128);
	ring->skb = skb;
	report_parked(ring, page, "skb");
#endif
}

/*
 * XDP_TX of the buffer at next_to_clean: xdp_convert_buff_to_frame() puts
 * the xdp_frame in the buffer's own headroom and the XDP tx ring's slot
 * points at it (i40e_xmit_xdp_ring()) until the NIC has sent it.
 */
static void fake_xdp_tx(struct i40e_ring *rx, struct i40e_ring *xdp_ring)
{
	unsigned int headroom = fake_rx_offset(rx);
	struct i40e_tx_buffer *tx;
	struct xdp_frame *xdpf;
	struct page *page;
	u8 *va;

	if (headroom < sizeof(*xdpf))
		return;
	page = fake_take_buffer(rx, &va);
	if (!page)
		return;
	xdpf = (struct xdp_frame *)(va - headroom);
	memset(xdpf, 0, sizeof(*xdpf));
	xdpf->data = va;
	xdpf->len = 128;
	xdpf->headroom = headroom - sizeof(*xdpf);
	xdpf->frame_sz = i40e_rx_pg_size(rx) / 2;
	tx = &xdp_ring->tx_bi[xdp_ring->next_to_use];
	tx->xdpf = xdpf;
	tx->bytecount = xdpf->len;
	tx->gso_segs = 1;
	xdp_ring->next_to_use = (xdp_ring->next_to_use + 1) % xdp_ring->count;
	report_parked(xdp_ring, page, "xdp-tx");
}

/*
 * A TCP flow in the middle of GRO when memory is dumped.  i40e_clean_rx_irq()
 * hands every frame to napi_gro_receive() on the ring's q_vector: the first
 * segment of a flow waits in the napi's GRO list (napi->gro_hash, from 6.15
 * napi->gro.hash), and each next segment is merged into it -- the page of a
 * buffer built with build_skb() becomes a frag of the first skb, in the
 * skb_shared_info inside the first segment's own page, and its skb is freed
 * (NAPI_GRO_FREE_STOLEN_HEAD).  The list is flushed when the poll completes
 * (napi_complete_done()), so a core taken mid-poll holds the flow there;
 * this poll never completes.  The ring's slots no longer hold these pages:
 * the GRO list, or the first page, is their only holder.
 */
static int fake_napi_poll(struct napi_struct *napi, int budget)
{
	return 0;
}

static void write_segment(u8 *data, const struct net_device *dev, u32 seq, u16 id,
			  unsigned int len)
{
	struct iphdr *ip = write_eth_ip(data, dev, IPPROTO_TCP, sizeof(struct tcphdr) + len);
	struct tcphdr *tcp = (struct tcphdr *)(ip + 1);
	char *payload = (char *)(tcp + 1);
	unsigned int n;

	ip->id = htons(id);
	ip->frag_off = htons(IP_DF);
	ip->check = ip_fast_csum(ip, ip->ihl);
	memset(tcp, 0, sizeof(*tcp));
	tcp->source = htons(5201);
	tcp->dest = htons(40000);
	tcp->seq = htonl(seq);
	tcp->ack_seq = htonl(1);
	tcp->doff = sizeof(*tcp) / 4;
	tcp->ack = 1;
	tcp->window = htons(512);
	for (n = 0; n < len; n += 32)
		scnprintf(payload + n, min(32U, len - n), "fake_i40e gro seq %u+%u ", seq, n);
}

static void fake_gro_flow(struct i40e_ring *ring, int segments)
{
	unsigned int headroom = fake_rx_offset(ring), truesize = i40e_rx_pg_size(ring) / 2;
	const unsigned int len = 1000;
	struct i40e_q_vector *qv;
	struct sk_buff *skb;
	struct page *page;
	gro_result_t res;
	int i;
	u8 *va;

	qv = kzalloc(sizeof(*qv), GFP_KERNEL);
	if (!qv)
		return;
	qv->vsi = ring->vsi;
#ifdef HAVE_NAPI_ADD_WEIGHT
	netif_napi_add(ring->netdev, &qv->napi, fake_napi_poll);
#else
	netif_napi_add(ring->netdev, &qv->napi, fake_napi_poll, NAPI_POLL_WEIGHT);
#endif
	ring->q_vector = qv;
	for (i = 0; i < segments; i++) {
		page = fake_take_buffer(ring, &va);
		if (!page)
			return;
		write_segment(va, ring->netdev, 1000000 + i * len, 7000 + i, len);
		skb = build_skb(va - headroom, truesize);
		if (!skb) {
			put_page(page);
			return;
		}
		skb_reserve(skb, headroom);
		__skb_put(skb, ETH_HLEN + sizeof(struct iphdr) + sizeof(struct tcphdr) + len);
		skb_record_rx_queue(skb, ring->queue_index);
		skb->ip_summed = CHECKSUM_UNNECESSARY;
		skb->protocol = eth_type_trans(skb, ring->netdev);
		local_bh_disable();
		res = napi_gro_receive(&qv->napi, skb);
		local_bh_enable();
		/* held, or merged into the held skb; anything else went up the stack */
		if (res == GRO_HELD || res == GRO_MERGED || res == GRO_MERGED_FREE)
			report_parked(ring, page, "gro");
		else
			pr_info("fake_i40e: gro segment %d of %s not held (%d)\n", i,
				netdev_name(ring->netdev), res);
	}
}

static struct i40e_ring *fake_xdp_ring(struct i40e_vsi *vsi, struct device *dev, u16 q)
{
	struct i40e_ring *ring = kzalloc(sizeof(*ring), GFP_KERNEL);

	if (!ring)
		return NULL;
	ring->vsi = vsi;
	ring->netdev = vsi->netdev;
	ring->dev = dev;
	ring->queue_index = q;
	ring->count = 64;
	set_ring_xdp(ring);
	ring->tx_bi = kcalloc(ring->count, sizeof(*ring->tx_bi), GFP_KERNEL);
	if (!ring->tx_bi) {
		kfree(ring);
		return NULL;
	}
	return ring;
}

static void fake_free_xdp_ring(struct i40e_ring *ring)
{
	u16 i;

	if (!ring)
		return;
	for (i = 0; i < ring->count; i++)
		if (ring->tx_bi[i].xdpf)
			page_frag_free(ring->tx_bi[i].xdpf);
	kfree(ring->tx_bi);
	kfree(ring);
}

static void fake_free_ring(struct i40e_ring *ring)
{
	u16 i;

	if (!ring)
		return;
	for (i = 0; i < ring->count; i++) {
		struct i40e_rx_buffer *bi = &ring->rx_bi[i];

		if (!bi->page)
			continue;
		dma_unmap_page_attrs(ring->dev, bi->dma, i40e_rx_pg_size(ring),
				     DMA_FROM_DEVICE, I40E_RX_DMA_ATTR);
		__page_frag_cache_drain(bi->page, bi->pagecnt_bias);
	}
#ifndef HAVE_RING_XDP_BUFF
	dev_kfree_skb_any(ring->skb);
#endif
	if (ring->q_vector) {
		netif_napi_del(&ring->q_vector->napi);   /* frees what GRO holds */
		kfree(ring->q_vector);
	}
	kfree(ring->rx_bi);
	kfree(ring);
}

static netdev_tx_t fake_xmit(struct sk_buff *skb, struct net_device *dev)
{
	dev_kfree_skb_any(skb);
	return NETDEV_TX_OK;
}

static const struct net_device_ops fake_netdev_ops = {
	.ndo_start_xmit = fake_xmit,
};

static struct i40e_vsi *fake_vsi(struct i40e_pf *pf, struct device *dev, u16 idx,
				 enum i40e_vsi_type type, struct net_device *netdev,
				 const struct ring_plan *plans, u16 nplans, bool xdp)
{
	struct i40e_vsi *vsi = kzalloc(sizeof(*vsi), GFP_KERNEL);
	u16 q;

	if (!vsi)
		return NULL;
	vsi->back = pf;
	vsi->type = type;
	vsi->idx = idx;
	vsi->id = idx;
	vsi->netdev = netdev;
	vsi->base_queue = idx * 8;
	vsi->alloc_queue_pairs = nplans;
	vsi->num_queue_pairs = nplans;
	/* i40e_vsi_alloc_arrays(): tx rings, then xdp rings (with an XDP
	 * program), then rx rings */
	vsi->tx_rings = kcalloc((xdp ? 3 : 2) * nplans, sizeof(struct i40e_ring *), GFP_KERNEL);
	if (!vsi->tx_rings) {
		kfree(vsi);
		return NULL;
	}
	vsi->rx_rings = vsi->tx_rings + nplans;
	if (xdp) {
		vsi->xdp_rings = vsi->rx_rings;
		vsi->rx_rings += nplans;
		vsi->xdp_rings[0] = fake_xdp_ring(vsi, dev, 0);
	}
	for (q = 0; q < nplans; q++)
		vsi->rx_rings[q] = fake_ring(vsi, dev, q, &plans[q]);
	pf->vsi[idx] = vsi;
	return vsi;
}

static void fake_vsi_traffic(struct i40e_vsi *vsi, const struct ring_plan *plans)
{
	u16 q;

	for (q = 0; vsi && q < vsi->alloc_queue_pairs; q++)
		if (vsi->rx_rings[q])
			fake_traffic(vsi->rx_rings[q], &plans[q]);
}

static void fake_free_vsi(struct i40e_vsi *vsi)
{
	u16 q;

	if (!vsi)
		return;
	for (q = 0; q < vsi->alloc_queue_pairs; q++) {
		fake_free_ring(vsi->rx_rings[q]);
		if (vsi->xdp_rings)
			fake_free_xdp_ring(vsi->xdp_rings[q]);
	}
	kfree(vsi->tx_rings);
	kfree(vsi);
}

/*
 * The leak growing on a running host: writing N to
 * /sys/module/fake_i40e/parameters/leak_more replays N more
 * programming-status descriptors, each followed by traffic, on eth2's first
 * ring.  The pages lost are logged like the others (snapshot/diff/watch
 * tests count them there).  Writes are serialized by the kernel's param lock.
 */
static struct i40e_ring *growth_ring;

static int leak_more_set(const char *val, const struct kernel_param *kp)
{
	int n, err = kstrtoint(val, 0, &n);

	if (err)
		return err;
	if (!growth_ring)
		return -ENODEV;
	while (n-- > 0) {
		fake_programming_status(growth_ring);
		fake_receive(growth_ring, BIAS_NEW);
		fake_receive(growth_ring, BIAS_NEW);
	}
	return 0;
}

static const struct kernel_param_ops leak_more_ops = { .set = leak_more_set };
module_param_cb(leak_more, &leak_more_ops, NULL, 0200);

static const struct ring_plan main_plans[] = {
	{ .count = 256, .rx_buf_len = I40E_RXBUFFER_2048, .scheme = BIAS_NEW, .status = &order0_status },
	{ .count = 128, .rx_buf_len = I40E_RXBUFFER_3072, .scheme = BIAS_NEW, .status = &order1_status },
};

static const struct ring_plan fdir_plans[] = {
	{ .count = 64, .rx_buf_len = I40E_RXBUFFER_2048, .scheme = BIAS_OLD, .status = &fresh_status },
};

static atomic_t ports_probed = ATOMIC_INIT(0);

static int fake_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	u8 mac[ETH_ALEN] = { 0x3c, 0xfd, 0xfe, 0x00, 0x40, 0x0e };
	struct i40e_netdev_priv *np;
	struct net_device *netdev;
	struct i40e_pf *pf;
	int err;

	err = pcim_enable_device(pdev);
	if (err)
		return err;
	err = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (err)
		return err;
	pci_set_master(pdev);

	pf = kzalloc(sizeof(*pf), GFP_KERNEL);
	if (!pf)
		return -ENOMEM;
	mac[ETH_ALEN - 1] += atomic_inc_return(&ports_probed) - 1;
	pf->pdev = pdev;
	pf->num_alloc_vsi = 4;
	pf->vsi = kcalloc(pf->num_alloc_vsi, sizeof(struct i40e_vsi *), GFP_KERNEL);
	if (!pf->vsi) {
		kfree(pf);
		return -ENOMEM;
	}
	pci_set_drvdata(pdev, pf);

	netdev = alloc_etherdev_mq(sizeof(struct i40e_netdev_priv), ARRAY_SIZE(main_plans));
	if (!netdev)
		return -ENOMEM;
	netdev->netdev_ops = &fake_netdev_ops;
	SET_NETDEV_DEV(netdev, &pdev->dev);
#ifdef HAVE_ETH_HW_ADDR_SET
	eth_hw_addr_set(netdev, mac);
#else
	memcpy(netdev->dev_addr, mac, ETH_ALEN);
#endif
	np = netdev_priv(netdev);
	np->vsi = fake_vsi(pf, &pdev->dev, 0, I40E_VSI_MAIN, netdev, main_plans,
			   ARRAY_SIZE(main_plans), true);
	pf->lan_vsi = 0;
	/* A Flow Director VSI has rings but no netdev: only the PCI route sees it. */
	fake_vsi(pf, &pdev->dev, 1, I40E_VSI_FDIR, NULL, fdir_plans, ARRAY_SIZE(fdir_plans), false);

	err = register_netdev(netdev);
	if (err) {
		free_netdev(netdev);
		return err;
	}
	fake_vsi_traffic(pf->vsi[0], main_plans);
	fake_vsi_traffic(pf->vsi[1], fdir_plans);
	if (leak_pct && np->vsi)
		fake_leak_until(np->vsi->rx_rings[0], np->vsi->rx_rings[1]);
	/* pages held outside the rx slots: a frame in progress on the order-1
	 * ring, a frame sent back out by XDP_TX from the order-0 ring, and a
	 * TCP flow in GRO from the order-0 ring */
	if (np->vsi) {
		fake_park_frame(np->vsi->rx_rings[1]);
		if (np->vsi->xdp_rings[0])
			fake_xdp_tx(np->vsi->rx_rings[0], np->vsi->xdp_rings[0]);
		fake_gro_flow(np->vsi->rx_rings[0], 3);
	}
	if (!growth_ring)       /* the first port's */
		growth_ring = pf->vsi[0]->rx_rings[0];
	pr_info("fake_i40e: %s ready on %s\n", netdev_name(netdev), pci_name(pdev));
	return 0;
}

static void fake_remove(struct pci_dev *pdev)
{
	struct i40e_pf *pf = pci_get_drvdata(pdev);
	struct i40e_vsi *main_vsi = pf->vsi[0];
	u16 i;

	if (main_vsi && growth_ring == main_vsi->rx_rings[0])
		growth_ring = NULL;
	if (main_vsi && main_vsi->netdev) {
		unregister_netdev(main_vsi->netdev);
		free_netdev(main_vsi->netdev);
	}
	for (i = 0; i < pf->num_alloc_vsi; i++)
		fake_free_vsi(pf->vsi[i]);
	kfree(pf->vsi);
	kfree(pf);
}

static const struct pci_device_id fake_ids[] = {
	{ PCI_DEVICE(EDU_VENDOR, EDU_DEVICE) },
	{ }
};
MODULE_DEVICE_TABLE(pci, fake_ids);

static struct pci_driver fake_driver = {
	.name = "i40e",
	.id_table = fake_ids,
	.probe = fake_probe,
	.remove = fake_remove,
};
static int __init fake_init(void)
{
	vmct_truth_init();
	return pci_register_driver(&fake_driver);
}

static void __exit fake_exit(void)
{
	pci_unregister_driver(&fake_driver);
	vmct_truth_exit();
}

module_init(fake_init);
module_exit(fake_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools test module: i40e rings with a planted rx page leak");
