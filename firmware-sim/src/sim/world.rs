//! The simulation loop: builds the world for a seed, dispatches every happening, checks the
//! invariants at every step, heals and drains at the end, and summarizes.

use super::*;

impl World {
    pub(super) fn new(
        cfg: Config,
        prof: Option<Profile>,
        scripted: Option<Vec<(Duration, Plan)>>,
    ) -> World {
        let mut rng = Rng::new(cfg.seed);
        let mut prof_rng = rng.fork();
        let prof = prof.unwrap_or_else(|| Profile::from_seed(&mut prof_rng, &cfg));
        let params = HostParams {
            max_calls: prof.max_calls,
            answer_delay: Duration::from_millis(prof.answer_delay_ms),
            outbox_capacity: prof.outbox_capacity,
            seq_block: prof.seq_block,
            store_fail: prof.store_fail,
            store_slow: prof.store_slow,
            mark_fail: prof.mark_fail,
            pending_max: 20_000,
            callback_max_age: Duration::from_secs(prof.callback_max_age_s),
            inject: cfg.inject,
        };
        let mut oracle = Oracle::default();
        oracle.allow_known = cfg.allow_known_bugs;
        oracle.max_age = params.callback_max_age;
        let ctx = Ctx {
            now: Instant::ZERO,
            step: 0,
            sched: Sched::default(),
            rng,
            net: prof.net,
            oracle,
            stats: Stats::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            verbose: cfg.trace,
        };
        let gws = Gateways::default();
        World {
            cfg,
            host: Host::new(params),
            prof,
            ctx,
            gws,
            broker: Broker::new(),
            crm: Crm::default(),
            healing: false,
            heal_deadline: Instant::MAX,
            numbers: Vec::new(),
            ann_versions: BTreeMap::new(),
            scripted,
            demo_announcement: None,
        }
    }

    fn fail(&self, v: Violation) -> Failure {
        Failure {
            seed: self.cfg.seed,
            step: self.ctx.step,
            at: self.ctx.now,
            message: v.0,
        }
    }

    pub(super) fn run(&mut self) -> Result<Summary, Failure> {
        self.setup().map_err(|v| self.fail(v))?;
        while let Some((t, ev)) = self.ctx.sched.pop() {
            self.ctx.now = t;
            self.ctx.step += 1;
            let mut h = self.ctx.trace;
            for b in t
                .as_micros()
                .to_le_bytes()
                .into_iter()
                .chain(ev.tag().to_le_bytes())
            {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            self.ctx.trace = h;
            if self.ctx.verbose {
                println!(
                    "{:>9} {:>12.6} {}",
                    self.ctx.step,
                    t.as_micros() as f64 / 1e6,
                    describe(&ev)
                );
            }
            self.dispatch(ev).map_err(|v| self.fail(v))?;
            self.check_step().map_err(|v| self.fail(v))?;
            if !self.healing {
                let placed_all = self.ctx.stats.calls_placed >= self.cfg.calls;
                let out_of_steps = self.cfg.steps.is_some_and(|s| self.ctx.step >= s);
                if placed_all || out_of_steps {
                    self.heal();
                }
            } else if self.ctx.step.is_multiple_of(64) && self.drained() {
                break;
            } else if self.ctx.now > self.heal_deadline {
                // A callback stuck short of the CRM is the likeliest reason: name it.
                self.ctx
                    .oracle
                    .callbacks_settled(self.host.queue())
                    .map_err(|v| self.fail(v))?;
                return Err(self.fail(Violation(format!(
                    "did not drain within an hour of healing: {} gateway calls, {} node calls, node up {}, connected {}, CRM contiguous {} of {}",
                    self.gws.active(),
                    self.host.calls(),
                    self.host.is_up(),
                    self.host.connected(),
                    self.crm.contiguous,
                    self.ctx.oracle.max_seq()
                ))));
            }
        }
        self.ctx
            .oracle
            .booked_present(&self.host.disk.callbacks, self.host.queue())
            .map_err(|v| self.fail(v))?;
        self.ctx
            .oracle
            .callbacks_settled(self.host.queue())
            .map_err(|v| self.fail(v))?;
        let received = core::mem::take(&mut self.crm.received);
        let res = self.ctx.oracle.finish(&received, &self.crm.skipped);
        self.crm.received = received;
        res.map_err(|v| self.fail(v))?;
        let node = self.host.node_stats();
        self.ctx.stats.late_bookings_cancelled = node.late_bookings_cancelled;
        self.ctx.stats.expiry_events_unreported = self.ctx.oracle.expired_unreported;
        self.ctx.stats.invariant_checks = self.ctx.oracle.checks;
        self.ctx.stats.calls_cut_by_crash = self.ctx.oracle.cut_calls();
        Ok(Summary {
            seed: self.cfg.seed,
            profile: self.prof.clone(),
            steps: self.ctx.step,
            virtual_seconds: self.ctx.now.as_micros() as f64 / 1e6,
            stats: self.ctx.stats.clone(),
            callbacks_told_booked: self.ctx.oracle.told_booked(),
            callbacks_at_crm: self.crm.callbacks_received.len(),
            node,
            events_by_type: self.crm.by_type.clone(),
            max_seq: self.ctx.oracle.max_seq(),
            known_core_bugs: self.ctx.oracle.known.clone(),
            trace_hash: format!("{:016x}", self.ctx.trace),
        })
    }

    fn setup(&mut self) -> oracle::Check {
        let ctx = &mut self.ctx;
        self.host.start(ctx)?;
        ctx.sched.at(Instant::from_millis(1_000), Ev::CrmTick);
        if let Some(plans) = &self.scripted {
            for (i, (at, _)) in plans.iter().enumerate() {
                let _ = i;
                ctx.sched.at(Instant::ZERO + *at, Ev::PlaceCall);
            }
            return Ok(());
        }
        let first = ctx.ms(100, 2_000);
        ctx.after(first, Ev::PlaceCall);
        for gw in 0..self.prof.gateways {
            let d = ctx.ms(0, 30_000);
            ctx.after(d, Ev::OptionsTick { gw });
        }
        let d = ctx.ms(1_000, 20_000);
        ctx.after(d, Ev::JunkTick);
        ctx.sched.at(Instant::ZERO, Ev::AnnChurn);
        ctx.sched.at(Instant::from_millis(1), Ev::AnnChurn);
        let c = Duration::from_micros(
            ctx.rng
                .exp_micros(self.prof.crash_mean_s.saturating_mul(1_000_000)),
        );
        ctx.after(c, Ev::NodeCrash);
        let b = Duration::from_micros(
            ctx.rng
                .exp_micros(self.prof.broker_outage_mean_s.saturating_mul(1_000_000)),
        );
        ctx.after(b, Ev::BrokerDown);
        Ok(())
    }

    fn heal(&mut self) {
        self.healing = true;
        self.heal_deadline = self.ctx.now + Duration::from_secs(3_600);
        self.ctx.net.sip_loss = 0.0;
        self.ctx.net.rtp_loss = 0.0;
        self.ctx.net.duplicate = 0.0;
        if !self.broker.up && self.scripted.is_none() {
            self.ctx.after(Duration::from_millis(1), Ev::BrokerUp);
        }
    }

    fn drained(&self) -> bool {
        self.gws.active() == 0
            && self.host.is_up()
            && self.host.connected()
            && self.host.drained()
            && self.crm.contiguous >= self.ctx.oracle.max_seq()
    }

    fn check_step(&mut self) -> oracle::Check {
        self.host.check_bounds(&mut self.ctx)?;
        self.ctx.oracle.checks += 1;
        if self.ctx.sched.len() > 5_000_000 {
            oracle::fail!("the agenda holds {} happenings", self.ctx.sched.len());
        }
        if self.ctx.step.is_multiple_of(4_096) {
            self.ctx
                .oracle
                .booked_present(&self.host.disk.callbacks, self.host.queue())?;
        }
        Ok(())
    }

    fn dispatch(&mut self, ev: Ev) -> oracle::Check {
        let ctx = &mut self.ctx;
        match ev {
            Ev::Packet(p) => {
                if p.to == NODE_SIP {
                    if let Msg::Sip(d) = &p.msg {
                        self.host.on_sip(ctx, p.from, d)?;
                    }
                } else if p.to.ip() == IpAddr::V4(NODE_IP) {
                    if let Msg::Rtp(d) = &p.msg {
                        self.host.on_rtp(ctx, p.to.port(), p.from, d)?;
                    }
                } else {
                    self.gws.on_packet(ctx, p.to, p.msg);
                }
            }
            Ev::PlaceCall => self.place_call(),
            Ev::Gw { call, timer } => self.gws.on_timer(ctx, call, timer),
            Ev::OptionsTick { gw } => {
                self.gws.options(ctx, gw);
                ctx.after(Duration::from_secs(30), Ev::OptionsTick { gw });
            }
            Ev::JunkTick => {
                if !self.healing {
                    self.junk();
                    let ctx = &mut self.ctx;
                    let d = ctx.ms(1_000, 30_000);
                    ctx.after(d, Ev::JunkTick);
                }
            }
            Ev::NodeTimer { epoch, at } => self.host.on_timer(ctx, epoch, at)?,
            Ev::PlayTick { epoch } => {
                self.host.on_play_tick(ctx, epoch)?;
            }
            Ev::DiskDone { epoch, op, ok } => self.host.on_disk_done(ctx, epoch, op, ok)?,
            Ev::NodeCrash => {
                if !self.healing && self.host.is_up() {
                    self.host.crash(ctx, &mut self.broker);
                    let down = ctx.ms(2_000, 20_000);
                    ctx.after(down, Ev::NodeRestart);
                    let next = Duration::from_micros(
                        ctx.rng
                            .exp_micros(self.prof.crash_mean_s.saturating_mul(1_000_000)),
                    );
                    ctx.after(down + next, Ev::NodeCrash);
                }
            }
            Ev::NodeRestart => {
                if !self.host.is_up() {
                    self.host.start(ctx)?;
                }
            }
            Ev::NodeConnect { epoch } => self.host.on_connect(ctx, epoch, &mut self.broker)?,
            Ev::NodeConnLost { epoch, conn } => self.host.on_conn_lost(ctx, epoch, conn),
            Ev::NodeStatusTick { epoch } => self.host.on_status_tick(ctx, epoch),
            Ev::ToBroker { conn, msg } => self.broker.on_node_msg(ctx, conn, msg),
            Ev::ToNode { conn, msg } => self.host.on_broker(ctx, conn, msg)?,
            Ev::BrokerToCrm { bgen, msg } => {
                if self.broker.up && self.broker.gen == bgen {
                    self.crm.bgen = self.broker.gen;
                    self.crm.receive(ctx, msg)?;
                } else {
                    ctx.stats.broker_messages_lost += 1;
                }
            }
            Ev::CrmToBroker { bgen, msg } => self.broker.on_crm_msg(ctx, bgen, msg),
            Ev::BrokerDown => {
                if !self.healing && self.broker.up {
                    ctx.stats.broker_outages += 1;
                    let conn = self.broker.node_conn;
                    self.broker.down();
                    if let Some(conn) = conn {
                        let d = ctx.ms(1_000, 5_000);
                        let epoch = self.host.epoch;
                        ctx.after(d, Ev::NodeConnLost { epoch, conn });
                    }
                    if self.scripted.is_none() {
                        let up = ctx.ms(5_000, 60_000);
                        ctx.after(up, Ev::BrokerUp);
                    }
                }
            }
            Ev::BrokerUp => {
                if !self.broker.up {
                    self.broker.up = true;
                    self.crm.bgen = self.broker.gen;
                    if !self.healing && self.scripted.is_none() {
                        let next =
                            Duration::from_micros(ctx.rng.exp_micros(
                                self.prof.broker_outage_mean_s.saturating_mul(1_000_000),
                            ));
                        ctx.after(next, Ev::BrokerDown);
                    }
                }
            }
            Ev::CrmTick => {
                self.crm.bgen = self.broker.gen;
                self.crm.tick(ctx, self.broker.up);
                ctx.after(Duration::from_secs(1), Ev::CrmTick);
            }
            Ev::CrmCallback { id, state } => {
                self.crm.bgen = self.broker.gen;
                self.crm.callback_update(ctx, id, state, self.broker.up);
            }
            Ev::AnnChurn => self.churn(),
        }
        Ok(())
    }

    fn place_call(&mut self) {
        if self.healing {
            return;
        }
        if let Some(plans) = &self.scripted {
            let i = self.gws.next_idx as usize;
            if let Some((_, plan)) = plans.get(i) {
                let plan = plan.clone();
                self.gws.place(&mut self.ctx, 0, plan);
            }
            return;
        }
        let plan = self.random_plan();
        let gw = self.ctx.rng.below(self.prof.gateways as u64) as usize;
        self.gws.place(&mut self.ctx, gw, plan);
        let next = Duration::from_micros(
            self.ctx
                .rng
                .exp_micros(self.prof.arrival_mean_ms * 1_000)
                .max(1),
        );
        self.ctx.after(next, Ev::PlaceCall);
    }

    fn random_plan(&mut self) -> Plan {
        let idx = self.gws.next_idx;
        let answer_delay = self.prof.answer_delay_ms;
        let r = &mut self.ctx.rng;
        // A few callers call again soon, most of them about the callback they asked for
        // (it may still be waiting: the node must say "already booked").
        let (caller, keyed, confirm, repeat) = if r.chance(0.08) && !self.numbers.is_empty() {
            let i = r.below(self.numbers.len() as u64) as usize;
            let (c, k, confirm) = self.numbers[i].clone();
            (Some(c), k, confirm, true)
        } else {
            let c = format!("1215{:07}", 1_000_000 + idx % 9_000_000);
            let k = format!("44{:010}", 2_000_000_000 + idx);
            let confirm = r.chance(0.75);
            if self.numbers.len() >= 40 {
                self.numbers.remove(0);
            }
            self.numbers.push((c.clone(), k.clone(), confirm));
            let anonymous = r.chance(0.08);
            (if anonymous { None } else { Some(c) }, k, confirm, false)
        };
        let dialled = DIALLED[r.below(3) as usize].to_string();
        let offer = match r.below(100) {
            0..=89 => Offer::Standard,
            90..=97 => Offer::PcmaOnly,
            _ => Offer::G729Only,
        };
        let intent = match r.below(100) {
            _ if repeat && r.chance(0.8) => Intent::Callback { confirm },
            0..=29 => Intent::Listen,
            30..=69 => Intent::Callback { confirm },
            70..=84 => Intent::HearAgain,
            _ => Intent::Invalid,
        };
        let barge_in = r.chance(0.5);
        let bad_number_first = r.chance(0.2);
        let patience = r
            .chance(0.25)
            .then(|| Duration::from_micros(1_000_000 + r.exp_micros(25_000_000)));
        let cancel_after = (answer_delay > 0 && r.chance(0.15))
            .then(|| Duration::from_millis(r.range(50, answer_delay * 6 / 5)));
        let hold = r.chance(0.05).then(|| {
            (
                Duration::from_millis(r.range(2_000, 20_000)),
                Duration::from_millis(r.range(1_000, 10_000)),
            )
        });
        let die_after = r
            .chance(0.02)
            .then(|| Duration::from_millis(r.range(3_000, 30_000)));
        Plan {
            caller,
            dialled,
            offer,
            intent,
            barge_in,
            keyed,
            bad_number_first,
            patience,
            cancel_after,
            hold,
            die_after,
        }
    }

    fn junk(&mut self) {
        let ctx = &mut self.ctx;
        ctx.stats.junk_sent += 1;
        let n = ctx.stats.junk_sent;
        let kind = ctx.rng.below(7);
        let head = |method: &str, extra: &str| {
            format!(
                "{method} sip:ccedge@{NODE_SIP} SIP/2.0\r\nVia: SIP/2.0/UDP {SCANNER};branch=z9hG4bKjunk{n}\r\nFrom: <sip:scan@{SCANNER}>;tag=j{n}\r\nTo: <sip:ccedge@{NODE_SIP}>\r\nCall-ID: junk-{n}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
            )
        };
        let data: Vec<u8> = match kind {
            0 => (0..ctx.rng.range(1, 200))
                .map(|_| ctx.rng.below(256) as u8)
                .collect(),
            1 => format!("INVITE sip:x@{NODE_SIP} SIP/2.0\r\nVia: SIP/2.0/UDP {SCANNER};branch=z9hG4bKt{n}\r\nCall-ID: trunc-{n}\r\nCSeq: 1 INV").into_bytes(),
            2 => head("REGISTER", "").into_bytes(),
            3 => head("FROB", "").into_bytes(),
            4 => head("BYE", "").into_bytes(),
            5 => head("INVITE", "Max-Forwards: 0\r\nUser-Agent: friendly-scanner\r\n").into_bytes(),
            _ => format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {NODE_SIP};branch=z9hG4bKnone\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: stray-{n}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n").into_bytes(),
        };
        ctx.send(SCANNER, NODE_SIP, Msg::Sip(data));
    }

    fn churn(&mut self) {
        self.crm.bgen = self.broker.gen;
        let ctx = &mut self.ctx;
        if let Some(a) = self.demo_announcement.take() {
            let id = a.id.as_str().to_string();
            self.crm
                .publish_announcement(ctx, id, Some(a), self.broker.up);
            return;
        }
        if self.healing || self.scripted.is_some() {
            return;
        }
        let id = ANN_IDS[ctx.rng.below(ANN_IDS.len() as u64) as usize];
        let live = matches!(self.crm.announcements.get(id), Some(Some(_)));
        if live && ctx.rng.chance(0.25) {
            self.crm
                .publish_announcement(ctx, id.to_string(), None, self.broker.up);
        } else if let Ok(aid) = AnnouncementId::new(id) {
            let v = self.ann_versions.entry(id).or_insert(0);
            *v += 1;
            let version = *v;
            let mut a = Announcement::new(aid, version);
            let wall = ctx.wall();
            let r = &mut ctx.rng;
            a.priority = r.below(10) as i32;
            let mut scope = Scope::default();
            if r.chance(0.3) {
                let site = if r.chance(0.7) { "phl" } else { "nyc" };
                if let Ok(s) = Site::try_from(site) {
                    let _ = scope.sites.push(s);
                }
            }
            if r.chance(0.5) {
                if let Ok(n) = PhoneNumber::parse(DIALLED[r.below(3) as usize]) {
                    let _ = scope.dialled.push(n);
                }
            }
            if r.chance(0.2) {
                if let Ok(n) = PhoneNumber::parse("1215") {
                    let _ = scope.caller_prefixes.push(n);
                }
            }
            a.scope = scope;
            if r.chance(0.3) {
                let from = wall.0 - 60_000 + r.range(0, 300_000) as i64;
                a.valid_from = Some(UnixMillis(from));
            }
            if r.chance(0.4) {
                let until = wall.0 + r.range(120_000, 1_800_000) as i64;
                a.valid_until = Some(UnixMillis(until));
            }
            if let (Some(f), Some(u)) = (a.valid_from, a.valid_until) {
                if u <= f {
                    a.valid_until = Some(UnixMillis(f.0 + 60_000));
                }
            }
            a.has_text = r.chance(0.3);
            if !a.has_text || r.chance(0.8) {
                let mut sha = [0u8; 32];
                let h = media::fnv1a(format!("{id}/{version}").as_bytes());
                for (i, b) in sha.iter_mut().enumerate() {
                    *b = (h >> ((i % 8) * 8)) as u8 ^ i as u8;
                }
                a.audio = Some(sha);
            }
            a.offer_callback = r.chance(0.8);
            a.language = Language::try_from("en").unwrap_or_default();
            self.crm
                .publish_announcement(ctx, id.to_string(), Some(a), self.broker.up);
        }
        // A new version every 20 s on average: over a run far more versions pass through
        // the node than its announcement set and audio cache can hold.
        let d = Duration::from_micros(self.ctx.rng.exp_micros(20_000_000));
        self.ctx.after(d, Ev::AnnChurn);
    }
}

fn describe(ev: &Ev) -> String {
    let mut s = String::new();
    match ev {
        Ev::Packet(p) => {
            let _ = write!(s, "{} -> {} ", p.from, p.to);
            match &p.msg {
                Msg::Sip(d) => {
                    let line = d.split(|b| *b == b'\r').next().unwrap_or(&[]);
                    let _ = write!(s, "SIP {}", String::from_utf8_lossy(line));
                }
                Msg::Rtp(d) => {
                    let _ = write!(s, "RTP {} bytes", d.len());
                }
                Msg::Audio(pl) => {
                    let _ = write!(s, "audio {pl:?}");
                }
            }
        }
        other => {
            let _ = write!(s, "{other:?}");
            if let Some((i, _)) = s.char_indices().nth(160) {
                s.truncate(i);
            }
        }
    }
    s
}
