/*
 * virtlease.pml: a Promela model (for spin) of virtlease's protocol, as
 * docs/safety.md states it and lease/, fence/ and hook/ implement it.
 * README.md, next to this file, says what is modelled, what is abstracted
 * away, how each assumption of docs/safety.md appears here, and what every check
 * shows; check.sh runs them all.
 *
 * One guest (one UUID: its domain key stands for all its keys, which a
 * claim takes all or nothing), NH hosts, one etcd. Time is abstract: one tick
 * is one renew interval. Every timer is RELATIVE (ticks left, or an age), so
 * the state space is finite and a check covers runs of any length.
 *
 * Compile-time switches (spin -DNAME ...):
 *   scope:    NOMIG (no live migration), NORECONCILE, NOLEADER (no etcd
 *             leader change), NOLATE (etcd never processes a renewal late),
 *             HA (HA restarts and intents), NH=3, MAXEP=n (leases per host in
 *             one run), HOOK_AGE (a hook call gives up exactly HOOKT ticks
 *             after it began, instead of at any moment), P1ONLY (check only
 *             two_running), WDCRASH (a watchdog may crash, MAXCRASH times in a
 *             run, and systemd restarts it), DEVICE (with WDCRASH: the hardware
 *             watchdog device, its pets and the kernel's pings), STOP_ANY (with
 *             HA: ha_restart_after_clean_stop counts a stop of a migration's
 *             source whose destination's prepare claimed, too), RELEASE_RACE
 *             (the reconcile's release of a stale key is two steps: State() and
 *             the read, then the Txn comparing the ModRevision read; without it
 *             one step), EARLY_REFUSAL (with HOOK_AGE: a migration's prepare may
 *             be refused before it claims, as the hook giving up at any moment
 *             does without HOOK_AGE)
 *   broken variants, each must yield a counterexample:
 *     REPLY_DATED     the watchdog dates a renewal from its reply's arrival
 *     MARGIN=0        fence at the deadline itself (MARGIN=1: = election timeout)
 *     RELEASE_ANY     release deletes the domain key without the holder/lease compare
 *   a docs/safety.md assumption dropped, each must yield a counterexample:
 *     SLOW_KILL       a fence's kill may take any time (not "within the margin")
 *     CLOCK_DRIFT     etcd's clock may run faster than the hosts'
 *     EARLY_EXPIRY    etcd may expire a lease up to MARGIN ticks before its time
 *   probes, each must be reached (so the checks above are not vacuous):
 *     PROBE_FAILOVER  the guest runs on one host after another host's fence killed it
 *     PROBE_HANDOFF   a migration hands the keys to the running destination
 *     PROBE_HA        an HA restart begins after another host's fence killed the guest (with HA)
 *     PROBE_RESET     the device resets a machine whose guest runs (with WDCRASH, DEVICE)
 *   the code before the fixes of the model's findings (README: "Findings"):
 *     CODE_NORECHECK  hook.prepare: the guest starts whenever the claim's reply
 *                     arrives within the hook deadline; the session is not
 *                     looked at again
 *     CODE_HANDOFF    lease.HandOff: a source key already gone is skipped, the
 *                     migration record dropped all the same
 *     CODE_MARKER     hook.prepare: any prepare that finds an incoming marker
 *                     claims as the destination of that migration
 *     CODE_MARKER_TTL hook.prepare after the first fix: a marker younger than
 *                     MARKER_TTL ticks (incomingTTL, 60 s) counts
 *     CODE_RESUME_AFTER_DIAL  (with WDCRASH) runWatchdog: a restarted watchdog
 *                     enforces its session file's deadline only once it has
 *                     connected to etcd; with DEVICE it opens the device
 *                     (SETTIMEOUT pings) before that, and an exit pings it again
 *     CODE_STALE_INCOMING hook.prepare/release: the first prepare that passes
 *                     its early checks consumes the incoming marker and claims as
 *                     incoming; a release after a prepare refused before that
 *                     drops neither the marker nor the record
 *     CODE_IDEMPOTENT_CLAIM  lease.Store.Claim: a start whose keys are all mine
 *                     already writes nothing (their ModRevision stays)
 *     CODE_HANDOFF_ANY  hook.release: the source hands off whenever a record from
 *                     it exists, prepared by the destination or not (with HA)
 * The verified model follows the code after the fixes: only the prepare of the
 * migration that wrote the marker claims as incoming, and whatever refuses it
 * drops marker and record; a restarted watchdog resumes its session file's
 * deadline before any network I/O and touches the device only when a pet is
 * due; a start rewrites keys already its own; the source hands off only a
 * record its destination's prepare claimed under.
 */

/* ------------------------------------------------------------ constants */

#ifndef NH
#define NH 2            /* hosts: 2 or 3 */
#endif
#ifndef TTL
#define TTL 5           /* session TTL, ticks (default config: 10 s at 1 s renewals) */
#endif
#ifndef MARGIN
#define MARGIN 2        /* fence margin, ticks (default config: 3 s) */
#endif
#ifndef ELECTION
#define ELECTION 1      /* etcd election timeout, ticks: a deposed leader may ack until then */
#endif
#define RTO 2           /* a renewal's context timeout: 2 x renew_interval (fence.Watchdog.renew) */
#ifndef HOOKT
#define HOOKT 3         /* hook deadline, ticks: longer than the margin, as 5 s > 3 s */
#endif
#ifndef MAXEP
#define MAXEP 2         /* leases (sessions) per host in one run: the first + one after a fence */
#endif
#ifndef MAXCRASH
#define MAXCRASH 1      /* watchdog crashes in one run (WDCRASH), all hosts together */
#endif
#define DT (TTL - 2 - 1) /* device timeout: ttl - 2 x renew_interval - 1 s (fence.Config.DeviceTimeout) */
#if defined(DEVICE) && !defined(WDCRASH)
#error "DEVICE needs WDCRASH"
#endif
#if defined(CODE_RESUME_AFTER_DIAL) && !defined(WDCRASH)
#error "CODE_RESUME_AFTER_DIAL needs WDCRASH"
#endif

/* DESIGN's timing rules as fence.Config.Validate checks them, in ticks
 * (the broken variants MARGIN=0 and MARGIN=1 break "margin >= 2 x renew" on purpose) */
#if TTL < 3
#error "ttl must be at least 3 x renew_interval"
#endif
#if MARGIN > TTL - 2
#error "margin must be at most ttl - 2 x renew_interval"
#endif

#ifdef CODE_NORECHECK
#ifndef HOOK_AGE
#define HOOK_AGE        /* this finding needs the hook's real deadline */
#endif
#endif

/* ------------------------------------------------------------ state */

/* hosts: the guest's QEMU, the watchdog */
byte q[NH];     /* QEMU of the guest on this host: 0 none, 1 running, 2 paused (migration) */
byte wl[NH];    /* the watchdog's lease (an epoch: this host's n-th lease), 0 none */
byte dl[NH];    /* ticks until the watchdog's deadline (send time of last ack + TTL) */
bool fen[NH];   /* fencing: sticky until a new session is granted */
byte rq[NH];    /* renewal reply on its way: 0 none, 1 ack, 2 "lease not found" */
bool rf[NH];    /*   it answers a new-session request (revoke old, grant, register) */
byte ra[NH];    /*   its age: ticks since the request was SENT */
#ifdef HOOK_AGE
bool kd[NH];    /* a QEMU has outlived one fencing round */
#endif
#ifdef WDCRASH
byte wd[NH];    /* the watchdog process: 0 up; 1 down (crashed or exited: systemd restarts it);
                   2 restarted, connecting to etcd, not enforcing yet (CODE_RESUME_AFTER_DIAL);
                   3 the machine was reset by the device (down for the rest of the run) */
byte ncr;       /* watchdog crashes so far */
#endif
#ifdef DEVICE
byte dv[NH];    /* the hardware watchdog: ticks until it fires, 0 not armed */
#endif
#if defined(RELEASE_RACE) && !defined(NORECONCILE)
bool rs[NH];    /* reconcile found its guest inactive and Release read its stale key: the
                   delete Txn compares that ModRevision (any write to the key cancels it) */
#endif

/* etcd */
byte lep[NH];   /* this host's live lease (epoch), 0 none; hosts/HOST is attached to it */
byte etl[NH];   /* ticks until etcd expires it */
byte gen[NH];   /* leases granted to this host so far */
byte kh;        /* domains/UUID: holder host + 1, 0 absent */
byte kl;        /*   attached to the holder's lease (epoch) */
byte mf, mt;    /* migrations/UUID: from, to (host + 1), 0 absent */
byte mlp;       /*   attached to the destination's lease (epoch) */
byte dep;       /* > 0: a deposed leader may still acknowledge renewals */
bool mpr;       /*   prepared: the destination's prepare claimed under it */
#ifdef HA
byte iw;        /* intents/UUID: 0 none, 1 running, 2 stopped */
bool cstop;     /* the guest's last stop was a clean one whose release reached etcd; no start since */
#endif

/* hook calls: one libvirt job per domain and host at a time */
byte hk[NH];    /* 0 idle; 1 claim on its way; 2 claim ok on its way back; 3 refused on its way back;
                   4 release (drop record, hand off, release) on its way;
                   5 record-migration on its way; 6 recorded; 7 nobody holds it; 8 refused */
byte hl[NH];    /* the holder lease the call uses: the one the session file names */
#ifdef HOOK_AGE
byte ha[NH];    /* ticks since the call began */
#endif
byte inc[NH];   /* incoming marker /run/virtlease/incoming/UUID: source host + 1 */
#ifdef CODE_STALE_INCOMING
bool imig[NH];  /*   consumed by a prepare (renamed to migrated/UUID) */
#endif
#ifdef CODE_MARKER_TTL
#ifndef MARKER_TTL
#define MARKER_TTL 10   /* ticks; the code's 60 s */
#endif
byte mage[NH];  /* ticks since the marker was written */
#endif
#if defined(PROBE_FAILOVER) || defined(PROBE_HA)
#define FKILL
byte fkill;     /* a fence killed the running guest on this host + 1 */
#endif
#ifdef HA
bool hc[NH];    /* the release is a clean stop's: it writes want: stopped */
#endif

/* the live migration libvirt runs (one guest: at most one) */
byte mp;        /* 0 none; 1 destination's migrate hook; 2 destination's prepare;
                   3 destination QEMU paused, copying; 5 switched over: the
                   destination runs, the source's QEMU (paused) is to go */
byte ms, md;    /* source, destination */

/* ------------------------------------------------------------ macros */

#ifdef WDCRASH
#define UP(h)         (wd[h] == 0)          /* the watchdog process runs (and enforces) */
#define ALIVE(h)      (wd[h] != 3)          /* the machine has not been reset */
#if defined(DEVICE) && !defined(CODE_RESUME_AFTER_DIAL)
#define WAITS(h)      (wd[h] == 0)          /* up; a dead one may stay dead: the device covers it */
#else
#define WAITS(h)      (wd[h] < 2)           /* up, or down with systemd restarting it at once */
#endif
#else
#define UP(h)         true
#define ALIVE(h)      true
#define WAITS(h)      true
#endif
/* lease.Session.Live: the hook reads the session file, which outlives a crashed watchdog */
#define LIVE(h)       (ALIVE(h) && wl[h] != 0 && !fen[h] && dl[h] > MARGIN)
/* fence.Watchdog.pet's rule: the last acknowledged renewal was sent less than
 * 2 x renew_interval ago, or fenced with no QEMU left */
#define PET_OK(h)     ((wl[h] != 0 && !fen[h] && dl[h] > TTL - 2) || (fen[h] && q[h] == 0))
#if defined(RELEASE_RACE) && !defined(NORECONCILE)
#if NH == 2
#define KEY_WRITTEN   rs[0] = 0; rs[1] = 0
#else
#define KEY_WRITTEN   rs[0] = 0; rs[1] = 0; rs[2] = 0
#endif
#else
#define KEY_WRITTEN   skip
#endif
#define MIGFREE(h)    (mp == 0 || (ms != h && md != h))
#define RUN(h)        (q[h] == 1)
#define FENCE_DUE(h)  (wl[h] != 0 && !fen[h] && dl[h] <= MARGIN)
#define MINE(h, l)    (kh == h + 1 && kl == l)

#ifdef REPLY_DATED
#define DATE(age)     TTL             /* deadline = reply arrival + TTL: wrong */
#else
#define DATE(age)     (TTL - (age))   /* deadline = send time + TTL */
#endif

#if defined(HOOK_AGE) && !defined(SLOW_KILL)
#define KILL_LATE(h)  (fen[h] && q[h] != 0 && kd[h] && WAITS(h))
#else
#define KILL_LATE(h)  false
#endif
/* time waits for a due fence: the watchdog acts on time, and a crashed one
 * is restarted and resumes its session file's deadline before the fence
 * point passes (WDCRASH: an assumption, README); one still connecting to
 * etcd (CODE_RESUME_AFTER_DIAL) or on a reset machine enforces nothing */
#define FENCE_WAIT(h) (FENCE_DUE(h) && WAITS(h))
#ifdef HOOK_AGE
#define HOOK_CALL(h, k)  hk[h] = k; hl[h] = wl[h]; ha[h] = 0
#define HOOK_IDLE(h)     hk[h] = 0; hl[h] = 0; ha[h] = 0
#else
#define HOOK_CALL(h, k)  hk[h] = k; hl[h] = wl[h]
#define HOOK_IDLE(h)     hk[h] = 0; hl[h] = 0
#endif

#if NH == 2
#define BLOCKED       (FENCE_WAIT(0) || KILL_LATE(0) || FENCE_WAIT(1) || KILL_LATE(1))
#define two_running   (RUN(0) && RUN(1))
#define ANY_QEMU      (q[0] != 0 || q[1] != 0)
#else
#define BLOCKED       (FENCE_WAIT(0) || KILL_LATE(0) || FENCE_WAIT(1) || KILL_LATE(1) || FENCE_WAIT(2) || KILL_LATE(2))
#define two_running   ((RUN(0) && RUN(1)) || (RUN(0) && RUN(2)) || (RUN(1) && RUN(2)))
#define ANY_QEMU      (q[0] != 0 || q[1] != 0 || q[2] != 0)
#endif

/* the guest runs on h, and the lease h holds it under is gone from etcd */
#define after_expiry(h)  (RUN(h) && lep[h] != wl[h])
/* the guest runs on h with neither the domain key naming h nor a migration record to h */
#define unprotected(h)   (RUN(h) && kh != h + 1 && mt != h + 1)

/* ------------------------------------------------------------ etcd */

/* etcd drops h's lease (expiry, or revoke): every key attached to it goes */
inline drop_lease(h) {
	if
	:: lep[h] != 0 ->
		if
		:: MINE(h, lep[h]) -> kh = 0; kl = 0; KEY_WRITTEN; printf("    etcd: the domain key of h%d goes with its lease\n", h)
		:: else
		fi;
		if
		:: mt == h + 1 && mlp == lep[h] -> mf = 0; mt = 0; mlp = 0; mpr = 0; printf("    etcd: the migration record to h%d goes with its lease\n", h)
		:: else
		fi;
		lep[h] = 0; etl[h] = 0
	:: else
	fi
}

/*
 * One claim (lease.Store.Claim): the read and the write Txn collapsed into
 * one step, as the write compares every ModRevision it read. lse: the holder
 * lease; from: IncomingFrom (host + 1, 0 none); start: a new start, not an
 * adoption. res: 0 ErrNoSession, 1 ok, 2 HeldError on the domain key,
 * 3 HeldError on the migration record.
 */
inline claim_txn(h, lse, from, start, res) {
	if
	:: lep[h] != lse || lse == 0 -> res = 0                               /* hosts/HOST not on my lease */
	:: else ->
		if
		:: from != 0 && !(mf == from && mt == h + 1) -> res = 3           /* no such migration recorded */
		:: else ->
			if
			:: mt != 0 && mt != h + 1 && (start || mf != h + 1) -> res = 3   /* being migrated elsewhere */
			:: else ->
				if
				:: kh == 0 -> kh = h + 1; kl = lse; res = 1; KEY_WRITTEN
				:: kh != 0 && from != 0 && kh == from -> res = 1                      /* the source's until the hand-off */
				:: kh != 0 && !(from != 0 && kh == from) && MINE(h, lse) -> res = 1;  /* mine already */
#ifndef CODE_IDEMPOTENT_CLAIM
					if                                    /* a start rewrites it: its ModRevision moves */
					:: start -> KEY_WRITTEN
					:: else
					fi
#else
					skip                                  /* nothing written */
#endif
				:: else -> res = 2
				fi;
				if                                            /* the record now says: prepared */
				:: res == 1 && from != 0 -> mpr = 1
				:: else
				fi
			fi
		fi
	fi
}

/*
 * The release hook after h's QEMU is gone (hook.release), holder (h, hl[h]):
 * drop a migration record to me if I was a destination (lease.DropMigration),
 * hand my keys to a recorded destination (lease.HandOff), or else delete the
 * keys that are mine (lease.Store.Release). Three Txns, modelled as one step.
 */
inline release_txn(h) {
#ifdef HA
	if                                                    /* an operator's stop reaches etcd */
#ifdef STOP_ANY
	:: hc[h] && MINE(h, hl[h]) -> cstop = 1
#else
	:: hc[h] && MINE(h, hl[h]) && !(mf == h + 1 && mpr) -> cstop = 1   /* residual: README */
#endif
	:: else
	fi;
#endif
	if
#ifdef CODE_STALE_INCOMING
	:: inc[h] != 0 && imig[h] ->                          /* dropIncoming: only a consumed marker */
#else
	:: inc[h] != 0 ->                                     /* whatever refused it drops marker and record */
#endif
		if
		:: mt == h + 1 && mlp == hl[h] -> mf = 0; mt = 0; mlp = 0; mpr = 0; printf("    etcd: h%d drops the migration record to it\n", h)
		:: else
		fi;
		inc[h] = 0
#ifdef CODE_STALE_INCOMING
	:: inc[h] != 0 && !imig[h] -> printf("h%d: release: no migrated marker: the incoming marker and the record stay\n", h)
#endif
	:: else
	fi;
	if
	:: mf == h + 1 && lep[mt - 1] == mlp && mlp != 0 &&
#ifdef CODE_HANDOFF_ANY
	   true ->                                            /* any record from me: hand off */
#else
	   mpr ->                                             /* only one its destination's prepare claimed under */
#endif
#ifdef CODE_HANDOFF
		if
		:: MINE(h, hl[h]) -> kh = mt; kl = mlp; KEY_WRITTEN
		:: else                                           /* gone already: skipped */
		fi;
#else
		if                                                /* mine, or gone already: to the destination */
		:: kh == 0 || MINE(h, hl[h]) -> kh = mt; kl = mlp; KEY_WRITTEN
		:: else
		fi;
#endif
		if
		:: kh != 0 -> printf("    etcd: h%d hands off: the key now names h%d; record dropped\n", h, kh - 1)
#ifdef PROBE_HANDOFF
			;
			if
			:: q[kh - 1] == 1 -> printf("REACHED handoff\n"); assert(false)
			:: else
			fi
#endif
		:: else -> printf("    etcd: h%d hands off: its key is gone already, NO key moves; record dropped\n", h)
		fi;
		mf = 0; mt = 0; mlp = 0; mpr = 0
	:: else ->
		if
#ifdef RELEASE_ANY
		:: kh != 0 -> printf("    etcd: h%d's release deletes the domain key (naming h%d)\n", h, kh - 1); kh = 0; kl = 0; KEY_WRITTEN
#else
		:: MINE(h, hl[h]) -> kh = 0; kl = 0; KEY_WRITTEN; printf("    etcd: h%d releases its domain key\n", h)
#ifdef HA
			;
			if                                        /* a clean stop: want stopped, same Txn */
			:: hc[h] -> iw = 2; printf("    etcd: intent: stopped\n")
			:: else
			fi
#endif
#endif
		:: else
		fi
	fi
#ifdef HA
	; hc[h] = 0
#endif
}

/* ------------------------------------------------------------ hosts */

/* h's QEMU is gone (stopped or killed): libvirt calls the release hook,
 * which returns at once on a fencing host (its keys go with its session) */
inline qemu_gone(h) {
	assert(hk[h] == 0);
	q[h] = 0;
	if
	:: !fen[h] -> HOOK_CALL(h, 4)
	:: else
	fi;
	if
	:: mp == 3 && md == h ->                       /* migration fails: the source goes on */
		printf("    migration h%d -> h%d fails\n", ms, md);
		mp = 0
	:: mp == 5 && ms == h -> mp = 0                /* the source is gone: migration over */
	:: else
	fi
}

#ifdef DEVICE
/* the hardware watchdog fires: the machine resets. Its QEMU is gone with no
 * hook, and the host takes no part in the rest of the run (its lease expires) */
inline reset(h) {
	printf("h%d: the hardware watchdog FIRES: the machine resets\n", h);
#ifdef PROBE_RESET
	if
	:: q[h] == 1 -> printf("REACHED device_reset\n"); assert(false)
	:: else
	fi;
#endif
	q[h] = 0; wd[h] = 3; inc[h] = 0; rq[h] = 0; rf[h] = 0; ra[h] = 0;
	HOOK_IDLE(h);
	if
	:: mp != 0 && (md == h || (mp == 5 && ms == h)) -> mp = 0
	:: else
	fi
}
#endif

inline fence(h) {
	printf("h%d: FENCES (deadline in %d)\n", h, dl[h]);
	fen[h] = 1; dl[h] = 0
#ifndef SLOW_KILL
	;
	if
	:: q[h] != 0 -> printf("h%d: kills its QEMU\n", h);
#ifdef FKILL
		if
		:: q[h] == 1 -> fkill = h + 1
		:: else
		fi;
#endif
		qemu_gone(h)
	:: else
	fi
#endif
}

/* the prepare hook: session check, then the claim */
inline prepare(h) {
	if
	:: LIVE(h) -> HOOK_CALL(h, 1)
	:: else -> HOOK_CALL(h, 4);                    /* refused here; libvirt releases */
		if
		:: mp == 2 && md == h -> mp = 0
		:: else
		fi
	fi
}

/* a hook call gives up at its deadline */
inline hook_deadline(h) {
	if
	:: hk[h] >= 1 && hk[h] <= 3 ->                 /* prepare fails; libvirt calls the release hook */
		printf("h%d: the prepare hook gives up (etcd did not answer)\n", h);
		if
		:: mp == 2 && md == h -> mp = 0
		:: else
		fi;
		HOOK_CALL(h, 4)
	:: hk[h] >= 5 ->                               /* migrate hook fails: no migration */
		printf("h%d: the migrate hook gives up\n", h);
		if
		:: hk[h] == 6 -> inc[h] = 0                /* its marker was never written */
		:: else
		fi;
		HOOK_IDLE(h); mp = 0
	:: hk[h] == 4 -> HOOK_IDLE(h);                 /* release gave up */
		printf("h%d: the release hook gives up (etcd did not answer)\n", h)
	fi
}

/* a migration of the guest from h to d begins: d's migrate hook */
inline mig_begin(h, d) {
	ms = h; md = d; mp = 1;
	HOOK_CALL(d, 5);
	printf("h%d: migration h%d -> h%d begins: record-migration\n", d, h, d)
}

#define CANDST(d) (q[d] == 0 && hk[d] == 0 && LIVE(d))
#if defined(CODE_MARKER_TTL)
#define MARKER_NEW(h) mage[h] = 0
#elif defined(CODE_STALE_INCOMING)
#define MARKER_NEW(h) imig[h] = 0
#else
#define MARKER_NEW(h) skip
#endif

proctype Host(byte h) {
	byte res;
	do
	/* ---- watchdog: renewals. A request etcd never sees is a step not
	 * taken; etcd processes one at once (a later processing is the
	 * "late renewal" step below); the reply may come back later, or never. */
	:: d_step { UP(h) && rq[h] == 0 && wl[h] != 0 && !fen[h] ->
		if
		:: lep[h] == wl[h] -> etl[h] = TTL; rq[h] = 1;
			printf("h%d: renewal sent; etcd renews the lease (expires in %d)\n", h, TTL)
		:: else -> rq[h] = 2
		fi;
		ra[h] = 0
	   }
	:: d_step { UP(h) && rq[h] == 0 && wl[h] != 0 && !fen[h] && lep[h] == wl[h] && dep > 0 ->
		rq[h] = 1; ra[h] = 0;
		printf("h%d: renewal sent; a DEPOSED leader acks it (lease not renewed)\n", h)
	   }
	:: d_step { UP(h) && rq[h] == 0 && (wl[h] == 0 || fen[h]) && gen[h] < MAXEP ->
		drop_lease(h);                               /* revoke the old lease (and any orphan) */
		gen[h]++; lep[h] = gen[h]; etl[h] = TTL; rq[h] = 1; rf[h] = 1; ra[h] = 0;
		printf("h%d: new-session request; etcd revokes the old lease, grants lease %d\n", h, gen[h])
	   }
	/* the reply arrives, within the request's timeout */
	:: d_step { rq[h] == 1 ->
		if
		:: rf[h] -> wl[h] = gen[h]; fen[h] = 0; dl[h] = DATE(ra[h]);
#ifdef HOOK_AGE
			kd[h] = 0;
#endif
			printf("h%d: session %d held, deadline in %d\n", h, wl[h], dl[h])
		:: else ->
			if
			:: !fen[h] && DATE(ra[h]) > dl[h] -> dl[h] = DATE(ra[h])
			:: else
			fi;
			printf("h%d: renewal acked (sent %d ago): deadline in %d\n", h, ra[h], dl[h])
		fi;
		rq[h] = 0; rf[h] = 0; ra[h] = 0
	   }
	:: d_step { rq[h] == 2 ->
		printf("h%d: etcd says its lease is gone\n", h);
		if
		:: !fen[h] -> fence(h)
		:: else
		fi;
		rq[h] = 0; ra[h] = 0
	   }
	/* ---- watchdog: fence at deadline - margin, and keep killing */
	:: d_step { UP(h) && FENCE_DUE(h) -> fence(h) }
	:: d_step { UP(h) && fen[h] && q[h] != 0 -> printf("h%d: fencing: kills its QEMU\n", h); qemu_gone(h) }
#ifdef WDCRASH
	/* ---- the watchdog crashes (OOM, kill -9, systemd's abort): the reply on
	 * its way is lost; the session file keeps its last state and deadline */
	:: d_step { wd[h] == 0 && ncr < MAXCRASH ->
		ncr++; wd[h] = 1; rq[h] = 0; rf[h] = 0; ra[h] = 0;
#if defined(RELEASE_RACE) && !defined(NORECONCILE)
		rs[h] = 0;
#endif
#if defined(DEVICE) && defined(CODE_RESUME_AFTER_DIAL)
		if                                           /* the kernel closes its file without V: a ping */
		:: dv[h] != 0 -> dv[h] = DT
		:: else
		fi;
#endif                                               /* fixed: systemd keeps a copy of the file: no close */
		printf("h%d: the watchdog CRASHES (session file: lease %d, deadline in %d)\n", h, wl[h], dl[h])
	   }
	/* systemd restarts it */
	:: d_step { wd[h] == 1 ->
#ifdef CODE_RESUME_AFTER_DIAL
		wd[h] = 2;
#ifdef DEVICE
		dv[h] = DT;                                  /* OpenDevice: SETTIMEOUT pings */
		printf("h%d: systemd restarts the watchdog: it opens the device (a ping) and dials etcd\n", h)
#else
		printf("h%d: systemd restarts the watchdog: it dials etcd first\n", h)
#endif
#else
		wd[h] = 0;                                   /* resume: the file's deadline binds at once; the
		                                                device's file comes back from systemd, no ping */
		printf("h%d: systemd restarts the watchdog: it resumes lease %d, deadline in %d, before any network I/O\n", h, wl[h], dl[h])
#endif
	   }
#ifdef CODE_RESUME_AFTER_DIAL
	/* connected (dial, login, renewer, members): resume() in Run */
	:: d_step { wd[h] == 2 -> wd[h] = 0; printf("h%d: the watchdog has reached etcd: it resumes lease %d, deadline in %d\n", h, wl[h], dl[h]) }
#ifdef DEVICE
	/* etcd unreachable with auth: the login fails, exit 3 (close without V pings) */
	:: d_step { wd[h] == 2 -> wd[h] = 1; dv[h] = DT; printf("h%d: the watchdog cannot log in to etcd: exits (the close pings the device)\n", h) }
#endif
#endif
#endif

	/* ---- start (an operator, anywhere, at any time): the prepare hook */
	:: d_step { q[h] == 0 && hk[h] == 0 && MIGFREE(h) && LIVE(h) ->
		printf("h%d: start: the prepare hook claims under lease %d\n", h, wl[h]);
		prepare(h)
	   }
#ifdef HA
	/* HA restart (fence.restartOnce + lease.BeginRestart, read at one revision) */
	:: d_step { UP(h) && q[h] == 0 && hk[h] == 0 && MIGFREE(h) && LIVE(h) && lep[h] == wl[h] &&
		    iw == 1 && kh == 0 && mt == 0 ->
		printf("h%d: HA restart (intent running, no key, no migration record)\n", h);
		if                      /* HA never starts a guest that runs, or is paused, anywhere */
		:: ANY_QEMU -> printf("VIOLATED ha_restart_while_running\n")
		:: else
		fi;
		assert(!ANY_QEMU);
		if                      /* ... nor one an operator stopped (deliberate stops are final) */
		:: cstop -> printf("VIOLATED ha_restart_after_clean_stop\n")
		:: else
		fi;
		assert(!cstop);
#ifdef PROBE_HA
		if
		:: fkill != 0 && fkill != h + 1 -> printf("REACHED ha_restart\n"); assert(false)
		:: else
		fi;
#endif
		prepare(h)
	   }
#endif
	/* etcd: the claim Txn */
	:: d_step { hk[h] == 1 ->
#if defined(CODE_MARKER)
		claim_txn(h, hl[h], inc[h], 1, res);        /* any prepare takes the incoming marker */
#elif defined(CODE_MARKER_TTL)
		if                                          /* a marker younger than MARKER_TTL counts */
		:: mage[h] <= MARKER_TTL -> claim_txn(h, hl[h], inc[h], 1, res)
		:: else -> claim_txn(h, hl[h], 0, 1, res)
		fi;
#elif defined(CODE_STALE_INCOMING)
		if                                          /* the first prepare past its early checks consumes the marker */
		:: inc[h] != 0 && !imig[h] -> imig[h] = 1;
			printf("h%d: the prepare finds an incoming marker (from h%d): claims as incoming\n", h, inc[h] - 1);
			claim_txn(h, hl[h], inc[h], 1, res)
		:: else -> claim_txn(h, hl[h], 0, 1, res)
		fi;
#else
		if                                          /* only the migration's own prepare is incoming */
		:: mp == 2 && md == h -> claim_txn(h, hl[h], inc[h], 1, res)
		:: else -> claim_txn(h, hl[h], 0, 1, res)
		fi;
#endif
		if
		:: res == 1 -> hk[h] = 2; printf("    etcd: h%d's claim succeeds (the key names h%d)\n", h, kh - 1)
#ifdef HA
			; iw = 1; cstop = 0
#endif
		:: else -> hk[h] = 3; printf("    etcd: h%d's claim is refused\n", h)
		fi;
		res = 0
	   }
	/* the claim's answer reaches the hook in time: libvirt starts QEMU */
	:: d_step { hk[h] == 2 ->
		if
#ifdef CODE_NORECHECK
		:: true ->
#else
		:: wl[h] == hl[h] && LIVE(h) ->             /* the session is still good now */
#endif
			HOOK_IDLE(h);
			if
			:: mp == 2 && md == h -> q[h] = 2; mp = 3; printf("h%d: claim ok: QEMU starts paused (incoming)\n", h)
			:: else -> q[h] = 1; printf("h%d: claim ok: the guest RUNS here\n", h)
#ifdef PROBE_FAILOVER
				;
				if
				:: fkill != 0 && fkill != h + 1 -> printf("REACHED failover\n"); assert(false)
				:: else
				fi
#endif
			fi
#ifndef CODE_NORECHECK
		:: else -> printf("h%d: claim ok, but the session is past its fence point now: refuse\n", h);
			HOOK_CALL(h, 4);
			if
			:: mp == 2 && md == h -> mp = 0
			:: else
			fi
#endif
		fi
	   }
	:: d_step { hk[h] == 3 -> printf("h%d: start refused; libvirt calls the release hook\n", h);
		HOOK_CALL(h, 4);
		if
		:: mp == 2 && md == h -> mp = 0
		:: else
		fi
	   }
	/* ---- the guest stops (shutdown, destroy; also during a migration): a clean stop */
	:: d_step { q[h] == 1 && hk[h] == 0 -> printf("h%d: the guest stops\n", h);
#ifdef HA
		hc[h] = (wl[h] != 0 && !fen[h]);
#endif
		qemu_gone(h)
	   }
	/* etcd: the release hook's Txns */
	:: d_step { hk[h] == 4 -> release_txn(h); HOOK_IDLE(h) }
#ifndef HOOK_AGE
	/* a hook call's deadline passes (at any moment: covers "after HOOKT") */
	:: d_step { hk[h] != 0 -> hook_deadline(h) }
#endif

#ifndef NOMIG
	/* ---- a live migration from h: the destination's migrate hook */
	:: d_step { mp == 0 && q[h] == 1 && hk[h] == 0 && CANDST((h + 1) % NH) -> mig_begin(h, (h + 1) % NH) }
#if NH == 3
	:: d_step { mp == 0 && q[h] == 1 && hk[h] == 0 && CANDST((h + 2) % NH) -> mig_begin(h, (h + 2) % NH) }
#endif
	/* etcd: RecordMigration's Txn (h the destination) */
	:: d_step { hk[h] == 5 ->
		if
		:: lep[h] != hl[h] || hl[h] == 0 -> hk[h] = 8
		:: else ->
			if
			:: kh == 0 || kh == h + 1 -> hk[h] = 7
			:: else ->
				if
				:: mt != 0 ->
					if
					:: mt == h + 1 && mf == kh && mlp == hl[h] -> inc[h] = kh; mpr = 0; hk[h] = 6; MARKER_NEW(h)
					:: else -> hk[h] = 8
					fi
				:: else -> mf = kh; mt = h + 1; mlp = hl[h]; mpr = 0; inc[h] = kh; hk[h] = 6; MARKER_NEW(h);
					printf("    etcd: migration record h%d -> h%d, on h%d's lease\n", mf - 1, h, h)
				fi
			fi
		fi
	   }
	:: d_step { hk[h] == 6 -> mp = 2; printf("h%d: migration recorded; its prepare claims as incoming\n", h); prepare(h) }
#ifdef EARLY_REFUSAL
	/* ... or is refused before its claim (no etcd login in time, the shutdown
	 * file): the migration fails, libvirt calls the release hook. Without
	 * HOOK_AGE a hook call gives up at any moment, which covers this. */
	:: d_step { hk[h] == 6 -> mp = 0; HOOK_CALL(h, 4);
		printf("h%d: migration recorded; its prepare is refused before it claims\n", h) }
#endif
	:: d_step { hk[h] == 7 -> inc[h] = 0; mp = 2; printf("h%d: nobody holds the guest; its prepare claims\n", h); prepare(h) }
	:: d_step { hk[h] == 8 -> HOOK_IDLE(h); mp = 0; printf("h%d: migration refused\n", h) }
#endif

#ifndef NORECONCILE
	/* ---- watchdog: reconcile, while the session is ok */
	:: d_step { UP(h) && q[h] != 0 && hk[h] == 0 && wl[h] != 0 && !fen[h] ->
		claim_txn(h, wl[h], inc[h], 0, res);
		if
		:: res == 3 && inc[h] != 0 ->                   /* its migration is no longer recorded */
			inc[h] = 0; claim_txn(h, wl[h], 0, 0, res)
		:: else
		fi;
		if
		:: res == 1 && inc[h] != 0 && kh == h + 1 ->    /* every key is ours: the record is done */
			if
			:: mt == h + 1 && mlp == wl[h] -> mf = 0; mt = 0; mlp = 0; mpr = 0;
				printf("h%d: reconcile: incoming migration complete, record dropped\n", h)
			:: else
			fi;
			inc[h] = 0
		:: else
		fi;
		if
		:: res >= 2 && inc[h] == 0 -> printf("h%d: reconcile: another host holds the guest: kill\n", h); qemu_gone(h)
		:: else
		fi;
		res = 0
	   }
#ifdef RELEASE_RACE
	/* a key of mine whose guest libvirt reports inactive, no job: Release reads
	 * it (State(), then the read: two steps apart from its Txn) ... */
	:: d_step { UP(h) && q[h] == 0 && hk[h] == 0 && MIGFREE(h) && wl[h] != 0 && !fen[h] && MINE(h, wl[h]) && !rs[h] ->
		rs[h] = 1; printf("h%d: reconcile: its guest is inactive; Release reads its stale key\n", h) }
	/* ... and deletes it if its ModRevision is still as read */
	:: d_step { rs[h] -> kh = 0; kl = 0; KEY_WRITTEN; printf("h%d: reconcile deletes its stale key (ModRevision as read)\n", h) }
#else
	/* a key of mine whose guest does not run here, and no job: deleted */
	:: d_step { UP(h) && q[h] == 0 && hk[h] == 0 && MIGFREE(h) && wl[h] != 0 && !fen[h] && MINE(h, wl[h]) ->
		kh = 0; kl = 0; printf("h%d: reconcile deletes its stale key\n", h) }
#endif
#endif
	od
}

/* ------------------------------------------------------------ environment */

/* etcd's clock advances one tick: a lease whose time is up expires */
inline ETCD_TICK(h) {
	if
	:: lep[h] != 0 -> etl[h]--;
		if
		:: etl[h] == 0 -> printf("    etcd: h%d's lease %d EXPIRES\n", h, lep[h]); drop_lease(h)
		:: else
		fi
	:: else
	fi
}

/* One tick: every clock advances by one (equal rates). etcd expires a lease
 * exactly when its time is up. Replies older than the request timeout are
 * given up. A tick waits while a fence is due (the watchdog acts on time,
 * and a kill completes within the tick it starts in). */
inline tick(h) {
#ifdef DEVICE
	if                          /* the loop pets right before the tick, when the rule allows */
	:: UP(h) && PET_OK(h) -> dv[h] = DT
	:: else
	fi;
	if
	:: dv[h] != 0 -> dv[h]--;
		if
		:: dv[h] == 0 -> reset(h)
		:: else
		fi
	:: else
	fi;
#endif
	if
	:: dl[h] > 0 -> dl[h]--
	:: else
	fi;
	ETCD_TICK(h);
	if
	:: rq[h] != 0 -> ra[h]++;
		if
		:: ra[h] > RTO -> rq[h] = 0; rf[h] = 0; ra[h] = 0
		:: else
		fi
	:: else
	fi
#ifdef CODE_MARKER_TTL
	;
	if
	:: inc[h] != 0 && mage[h] <= MARKER_TTL -> mage[h]++
	:: else
	fi
#endif
#ifdef HOOK_AGE
	;
	if
	:: hk[h] != 0 -> ha[h]++;
		if
		:: ha[h] > HOOKT -> hook_deadline(h)
		:: else
		fi
	:: else
	fi;
	kd[h] = (fen[h] && q[h] != 0)
#endif
}

active proctype Env() {
	do
	:: d_step { !BLOCKED ->
		printf("--- tick\n");
		tick(0); tick(1);
#if NH == 3
		tick(2);
#endif
		if
		:: dep > 0 -> dep--
		:: else
		fi
	   }
#ifdef CLOCK_DRIFT
	/* etcd's clock ticks and the hosts' do not */
	:: d_step { true -> printf("    (etcd's clock runs ahead)\n");
		ETCD_TICK(0); ETCD_TICK(1);
#if NH == 3
		ETCD_TICK(2);
#endif
		skip
	   }
#endif
#ifdef EARLY_EXPIRY
	/* etcd expires a lease up to MARGIN ticks early */
	:: d_step { lep[0] != 0 && etl[0] <= MARGIN -> printf("    etcd: h0's lease %d EXPIRES EARLY\n", lep[0]); drop_lease(0) }
	:: d_step { lep[1] != 0 && etl[1] <= MARGIN -> printf("    etcd: h1's lease %d EXPIRES EARLY\n", lep[1]); drop_lease(1) }
#if NH == 3
	:: d_step { lep[2] != 0 && etl[2] <= MARGIN -> printf("    etcd: h2's lease %d EXPIRES EARLY\n", lep[2]); drop_lease(2) }
#endif
#endif
#ifndef NOLATE
	/* a renewal etcd processes late (its reply lost): the lease lives longer */
	:: d_step { lep[0] != 0 && etl[0] < TTL -> etl[0] = TTL }
	:: d_step { lep[1] != 0 && etl[1] < TTL -> etl[1] = TTL }
#if NH == 3
	:: d_step { lep[2] != 0 && etl[2] < TTL -> etl[2] = TTL }
#endif
#endif
#ifndef NOLEADER
	/* an etcd leader change: the new leader restarts every lease's TTL; the
	 * deposed one may acknowledge renewals for one election timeout more */
	:: d_step { dep == 0 ->
		printf("    etcd: leader change: every lease restarted\n");
		if :: lep[0] != 0 -> etl[0] = TTL :: else fi;
		if :: lep[1] != 0 -> etl[1] = TTL :: else fi;
#if NH == 3
		if :: lep[2] != 0 -> etl[2] = TTL :: else fi;
#endif
		dep = ELECTION + 1
	   }
#endif
#ifndef NOMIG
	/* the live migration's switch-over: the source pauses, the destination resumes */
	:: d_step { mp == 3 && q[ms] == 1 && q[md] == 2 ->
		q[ms] = 2; q[md] = 1; mp = 5;
		printf("h%d: switch-over: the source pauses, the destination (h%d) RUNS the guest\n", ms, md) }
	/* ... and the source's QEMU ends: its release hook hands the keys off */
	:: d_step { mp == 5 ->
		if
		:: q[ms] != 0 -> printf("h%d: the source's QEMU ends; its release hook hands off\n", ms); qemu_gone(ms)
		:: else
		fi;
		mp = 0
	   }
	/* or the migration fails before the switch-over */
	:: d_step { mp == 3 && q[md] == 2 -> printf("h%d: the migration fails; the destination's QEMU goes\n", md); qemu_gone(md) }
#endif
	od
}

/* ------------------------------------------------------------ properties */

active proctype two_hosts_running() {
	atomic { two_running -> printf("VIOLATED two_running\n"); assert(!two_running) }
}

#ifndef P1ONLY
active proctype running_after_expiry() {
	atomic { (after_expiry(0) || after_expiry(1)
#if NH == 3
		|| after_expiry(2)
#endif
		) -> printf("VIOLATED running_after_expiry\n"); assert(false) }
}

active proctype running_unprotected() {
	atomic { (unprotected(0) || unprotected(1)
#if NH == 3
		|| unprotected(2)
#endif
		) -> printf("VIOLATED running_unprotected\n"); assert(false) }
}
#endif

init {
	atomic {
		/* every host starts with a session just granted: its deadline TTL away */
		wl[0] = 1; lep[0] = 1; gen[0] = 1; dl[0] = TTL; etl[0] = TTL;
		wl[1] = 1; lep[1] = 1; gen[1] = 1; dl[1] = TTL; etl[1] = TTL;
#if NH == 3
		wl[2] = 1; lep[2] = 1; gen[2] = 1; dl[2] = TTL; etl[2] = TTL;
#endif
#ifdef DEVICE
		dv[0] = DT; dv[1] = DT;     /* armed and just petted */
#if NH == 3
		dv[2] = DT;
#endif
#endif
		run Host(0); run Host(1)
#if NH == 3
		; run Host(2)
#endif
	}
}
