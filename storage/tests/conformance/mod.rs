//! What every storage backend must do, checked through the capability traits only
//! (`&dyn Storage`), so that each backend runs the same suite: the embedded store in
//! `backend_sled.rs`, another backend in a file of its own beside it.
//!
//! Each check registers its own users (names carry the check's `tag`), so checks may
//! share one store and run in any order.

use bytes::Bytes;
use courier_protocol::ConversationId;
use courier_storage::{
    search_key, AppendRequest, BlobRecord, BlobStatus, BlobUpdate, EditOf, EditRefusal, EventsFor,
    GroupChange, GroupEvent, HistoryRange, JoinPolicy, MembershipRefusal, Profile, PushProvider,
    PushToken, ReactionChange, ReactionEventFn, RelationChange, RelationRefusal, RelationSet,
    RequestOutcome, Role, Storage, StorageError, MENTION_ALL,
};

const PASSWORD: &str = "correct horse";

async fn user(store: &dyn Storage, tag: &str, name: &str) -> u64 {
    store
        .register(&format!("{tag}-{name}"), PASSWORD)
        .await
        .expect("register")
        .id
}

fn send(c: ConversationId, sender: u64, id: &str, text: &str) -> AppendRequest {
    AppendRequest {
        conversation: c,
        sender,
        sender_device: "phone".into(),
        client_msg_id: id.into(),
        body: Bytes::copy_from_slice(text.as_bytes()),
        reply_to_seq: 0,
        recalls: 0,
        mentions: Vec::new(),
        edits: None,
    }
}

fn event(sender: u64, id: &str) -> EventsFor {
    let id = id.to_owned();
    Box::new(move |_| {
        vec![GroupEvent {
            sender,
            client_msg_id: id,
            body: Bytes::from_static(b"event"),
        }]
    })
}

/// Appends get gap-free seqs in submission order; a resend returns the first seq
/// and stores nothing; history pages and single reads agree with what was stored.
pub async fn appends_are_ordered_gap_free_and_idempotent(store: &dyn Storage, tag: &str) {
    let (a, b) = (user(store, tag, "a").await, user(store, tag, "b").await);
    let c = ConversationId::direct(a, b).unwrap();
    let mut tickets = Vec::new();
    for i in 0..5 {
        let ticket = store
            .submit(send(c, a, &format!("m{i}"), &format!("text {i}")))
            .await
            .unwrap();
        tickets.push(ticket);
    }
    let mut seqs = Vec::new();
    for ticket in tickets {
        let appended = ticket.wait().await.unwrap();
        assert!(!appended.duplicate);
        seqs.push(appended.seq);
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let again = store.append(send(c, a, "m2", "changed")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, 3);
    assert_eq!(store.last_seq(&c).await.unwrap(), 5);
    assert_eq!(
        store.message(&c, 3).await.unwrap().unwrap().body,
        Bytes::from_static(b"text 2")
    );
    assert!(store.message(&c, 6).await.unwrap().is_none());
    let latest = store.history(&c, HistoryRange::Latest, 2).await.unwrap();
    assert_eq!(
        latest.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [4, 5]
    );
    assert!(latest.has_more);
    let after = store.history(&c, HistoryRange::After(1), 10).await.unwrap();
    assert_eq!(after.messages.len(), 4);
    let above = store
        .history_above(&c, HistoryRange::Latest, 10, 3)
        .await
        .unwrap();
    assert_eq!(
        above.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [4, 5]
    );
    assert!(store.has_sent(&c, a).await.unwrap());
    assert!(!store.has_sent(&c, b).await.unwrap());
    let bad = store.submit(send(c, a, "", "no id")).await;
    assert!(matches!(bad, Err(StorageError::InvalidArgument(_))));
}

/// A recall erases the message's content and stores its event, together.
pub async fn a_recall_erases_and_stores_its_event(store: &dyn Storage, tag: &str) {
    let (a, b) = (user(store, tag, "a").await, user(store, tag, "b").await);
    let c = ConversationId::direct(a, b).unwrap();
    store.append(send(c, a, "secret", "oops")).await.unwrap();
    let recall = store
        .append(AppendRequest {
            recalls: 1,
            mentions: Vec::new(),
            edits: None,
            reply_to_seq: 1,
            ..send(c, a, "recall-1", "recalled")
        })
        .await
        .unwrap();
    assert_eq!(recall.seq, 2);
    let erased = store.message(&c, 1).await.unwrap().unwrap();
    assert!(erased.recalled.is_some_and(|r| r.by_user == a));
    assert!(erased.body.is_empty());
    let twice = store
        .append(AppendRequest {
            recalls: 1,
            mentions: Vec::new(),
            edits: None,
            ..send(c, a, "recall-1-again", "recalled")
        })
        .await;
    assert!(matches!(twice, Err(StorageError::Recall(_))), "{twice:?}");
}

/// An edit event marks its target edited (the latest event's body beside it); a
/// policy that keeps no versions erases the earlier ones; a recall of an edited
/// message erases its edit events with it; a recalled message cannot be edited.
pub async fn edits_mark_their_target_and_go_with_a_recall(store: &dyn Storage, tag: &str) {
    let (a, b) = (user(store, tag, "a").await, user(store, tag, "b").await);
    let c = ConversationId::direct(a, b).unwrap();
    let edit = |id: &str, target: u64, keep: bool, text: &'static str| AppendRequest {
        edits: Some(EditOf {
            target,
            keep_versions: keep,
        }),
        reply_to_seq: target,
        ..send(c, a, id, text)
    };
    store.append(send(c, a, "m1", "helo")).await.unwrap();
    store.append(send(c, b, "m2", "hi")).await.unwrap();
    assert_eq!(
        store
            .append(edit("e1", 1, true, "hello"))
            .await
            .unwrap()
            .seq,
        3
    );
    let edited = store.message(&c, 1).await.unwrap().unwrap();
    let mark = edited.edited.clone().expect("edited");
    assert_eq!((mark.by_user, mark.count, mark.event_seq), (a, 1, 3));
    assert_eq!(mark.event_body.as_ref(), b"hello");
    assert_eq!(
        edited.body.as_ref(),
        b"helo",
        "versions kept: the original stays"
    );
    assert!(store
        .message(&c, 2)
        .await
        .unwrap()
        .unwrap()
        .edited
        .is_none());

    // Versions not kept: the first edit event is erased (and the original's body,
    // on disk once the embedded store's checkpoint has passed it).
    assert_eq!(
        store
            .append(edit("e2", 1, false, "hello!"))
            .await
            .unwrap()
            .seq,
        4
    );
    let page = store
        .history(&c, HistoryRange::Latest, 10)
        .await
        .unwrap()
        .messages;
    let first = &page[0];
    let mark = first.edited.clone().expect("edited");
    assert_eq!((mark.count, mark.event_seq), (2, 4));
    assert_eq!(mark.event_body.as_ref(), b"hello!");
    assert!(page[2].recalled.is_some() && page[2].body.is_empty());
    assert!(page[3].recalled.is_none());

    // A recall takes every version along; then no edit is taken.
    store
        .append(AppendRequest {
            recalls: 1,
            mentions: Vec::new(),
            reply_to_seq: 1,
            ..send(c, a, "r1", "recalled")
        })
        .await
        .unwrap();
    let page = store
        .history(&c, HistoryRange::Latest, 10)
        .await
        .unwrap()
        .messages;
    for seq in [1, 3, 4] {
        let m = &page[seq as usize - 1];
        assert!(
            m.recalled.is_some() && m.body.is_empty(),
            "seq {seq}: {m:?}"
        );
        assert!(m.edited.is_none(), "seq {seq}");
    }
    assert!(page[1].recalled.is_none());
    let refused = store.append(edit("e3", 1, true, "again")).await;
    assert!(
        matches!(refused, Err(StorageError::Edit(EditRefusal::Recalled))),
        "{refused:?}"
    );
    let missing = store.append(edit("e4", 99, true, "nothing")).await;
    assert!(
        matches!(missing, Err(StorageError::Edit(EditRefusal::NoMessage))),
        "{missing:?}"
    );
}

/// Reactions: a batch's effective changes are stored with one event carrying the
/// new totals; no-ops change nothing and store no event; counts and "who" pages
/// read them back, with the viewer's own marked.
pub async fn reactions_are_counted_with_their_event(store: &dyn Storage, tag: &str) {
    let (a, b) = (user(store, tag, "a").await, user(store, tag, "b").await);
    let c = ConversationId::direct(a, b).unwrap();
    store.append(send(c, a, "m1", "hello")).await.unwrap();
    let change = |user: u64, emoji: &str, added: bool| ReactionChange {
        seq: 1,
        user,
        emoji: emoji.into(),
        added,
    };
    let describe = || -> ReactionEventFn {
        Box::new(|changes, totals| {
            let text = format!(
                "{} changes; {}",
                changes.len(),
                totals
                    .iter()
                    .map(|t| format!("{}={}", t.emoji, t.count))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            Bytes::from(text)
        })
    };
    let reacted = store
        .react(
            &c,
            vec![
                change(a, "👍", true),
                change(b, "👍", true),
                change(b, "🎉", true),
                // Twice in a batch: once.
                change(a, "👍", true),
            ],
            describe(),
        )
        .await
        .unwrap();
    assert_eq!(reacted.effective.len(), 3);
    let event = reacted.event.expect("an event");
    assert_eq!(event.seq, 2);
    let stored = store.message(&c, 2).await.unwrap().unwrap();
    assert_eq!(stored.body.as_ref(), "3 changes; 🎉=1,👍=2".as_bytes());
    // Removing one, adding one already there: one change, the new total.
    let reacted = store
        .react(
            &c,
            vec![change(b, "👍", false), change(a, "👍", true)],
            describe(),
        )
        .await
        .unwrap();
    assert_eq!(reacted.effective, [change(b, "👍", false)]);
    let stored = store.message(&c, 3).await.unwrap().unwrap();
    assert_eq!(stored.body.as_ref(), "1 changes; 👍=1".as_bytes());
    // Nothing to do: no event, no seq.
    let none = store
        .react(&c, vec![change(b, "👍", false)], describe())
        .await
        .unwrap();
    assert!(none.effective.is_empty() && none.event.is_none());
    assert_eq!(store.last_seq(&c).await.unwrap(), 3);
    // Reaction events are no news: they count in nobody's unread number.
    assert_eq!(store.quiet_count(&c, 0).await.unwrap(), 2);
    assert_eq!(store.quiet_count(&c, 2).await.unwrap(), 1);
    assert_eq!(store.quiet_count(&c, 3).await.unwrap(), 0);
    let counts = store.reaction_counts(&c, 1, 3, b).await.unwrap();
    let seen: Vec<(u64, &str, u64, bool)> = counts
        .iter()
        .map(|r| (r.seq, r.emoji.as_str(), r.count, r.mine))
        .collect();
    assert_eq!(seen, [(1, "🎉", 1, true), (1, "👍", 1, false)]);
    assert_eq!(store.reactors(&c, 1, "👍", 0, 10).await.unwrap()[0].0, a);
    assert!(store.reactors(&c, 1, "👍", a, 10).await.unwrap().is_empty());
    let bad = store.react(&c, vec![change(a, "", true)], describe()).await;
    assert!(
        matches!(bad, Err(StorageError::InvalidArgument(_))),
        "{bad:?}"
    );
    // The kinds, each once whoever reacted, a limit kept (in any order).
    store
        .react(
            &c,
            vec![change(b, "👍", true), change(a, "ok", true)],
            describe(),
        )
        .await
        .unwrap();
    let mut kinds = store.reaction_kinds(&c, 1, 10).await.unwrap();
    kinds.sort();
    assert_eq!(kinds, ["ok", "🎉", "👍"]);
    assert_eq!(store.reaction_kinds(&c, 1, 2).await.unwrap().len(), 2);
    assert!(store.reaction_kinds(&c, 2, 10).await.unwrap().is_empty());
}

/// Mentions are stored with their message and counted per reader above a seq,
/// by name or everyone, recalled messages not counted.
pub async fn mentions_are_counted_per_reader(store: &dyn Storage, tag: &str) {
    let (a, b) = (user(store, tag, "a").await, user(store, tag, "b").await);
    let c = ConversationId::direct(a, b).unwrap();
    let mention = |id: &str, who: Vec<u64>| AppendRequest {
        mentions: who,
        ..send(c, a, id, "hey")
    };
    store.append(mention("m1", vec![b])).await.unwrap();
    store
        .append(mention("m2", vec![MENTION_ALL]))
        .await
        .unwrap();
    store.append(mention("m3", vec![])).await.unwrap();
    store.append(mention("m4", vec![a])).await.unwrap();
    assert_eq!(store.message(&c, 1).await.unwrap().unwrap().mentions, [b]);
    assert!(store
        .message(&c, 3)
        .await
        .unwrap()
        .unwrap()
        .mentions
        .is_empty());
    assert_eq!(store.mention_count(&c, b, 0).await.unwrap(), 2);
    assert_eq!(store.mention_count(&c, b, 1).await.unwrap(), 1);
    assert_eq!(store.mention_count(&c, b, 2).await.unwrap(), 0);
    assert_eq!(store.mention_count(&c, a, 0).await.unwrap(), 2);
    store
        .append(AppendRequest {
            recalls: 2,
            reply_to_seq: 2,
            ..send(c, a, "r2", "recalled")
        })
        .await
        .unwrap();
    assert_eq!(store.mention_count(&c, b, 0).await.unwrap(), 1);
    // An edit moves its target's mentions to its new text's; the event itself
    // mentions nobody.
    let edit = |id: &str, target: u64, who: Vec<u64>| AppendRequest {
        edits: Some(EditOf {
            target,
            keep_versions: true,
        }),
        reply_to_seq: target,
        mentions: who,
        ..send(c, a, id, "edited")
    };
    let e1 = store.append(edit("e1", 3, vec![b])).await.unwrap();
    assert_eq!(store.mention_count(&c, b, 0).await.unwrap(), 2);
    assert_eq!(
        store.mention_count(&c, b, 3).await.unwrap(),
        0,
        "not the event"
    );
    assert!(e1.seq > 5);
    store.append(edit("e2", 1, vec![])).await.unwrap();
    assert_eq!(store.mention_count(&c, b, 0).await.unwrap(), 1);
    store
        .append(edit("e3", 4, vec![MENTION_ALL]))
        .await
        .unwrap();
    assert_eq!(store.mention_count(&c, b, 0).await.unwrap(), 2);
    assert_eq!(store.mention_count(&c, a, 0).await.unwrap(), 1);
    // Edit events are no news either (the recall event is).
    assert_eq!(store.quiet_count(&c, 0).await.unwrap(), 3);
    assert_eq!(store.quiet_count(&c, e1.seq).await.unwrap(), 2);
    let too_many = store.append(mention("m5", vec![b; 101])).await;
    assert!(
        matches!(too_many, Err(StorageError::InvalidArgument(_))),
        "{too_many:?}"
    );
}

/// Hiding and clearing change one user's view only: hidden messages above the
/// cleared seq are listed (the newest first up to a limit, ascending), the cleared
/// seq only moves up and drops the marks under it.
pub async fn hiding_and_clearing_are_per_user(store: &dyn Storage, tag: &str) {
    let (a, b) = (user(store, tag, "a").await, user(store, tag, "b").await);
    let c = ConversationId::direct(a, b).unwrap();
    for i in 0..6 {
        store
            .append(send(c, a, &format!("m{i}"), "hi"))
            .await
            .unwrap();
    }
    store.hide_messages(a, &c, &[2, 4, 5]).await.unwrap();
    store.hide_messages(a, &c, &[4]).await.unwrap();
    let view = store.hidden_view(a, &c, 10).await.unwrap();
    assert_eq!(
        (view.cleared_seq, view.hidden.as_slice()),
        (0, &[2, 4, 5][..])
    );
    assert_eq!(store.hidden_view(a, &c, 2).await.unwrap().hidden, [4, 5]);
    assert_eq!(
        store.hidden_view(b, &c, 10).await.unwrap(),
        Default::default()
    );
    // Devices learn which conversations' views changed since the version they saw.
    let (v1, changed) = store.views_changed_since(a, 0).await.unwrap();
    assert!(v1 > 0 && changed == [c], "{v1} {changed:?}");
    assert_eq!(view.version, v1);
    assert_eq!(
        store.views_changed_since(a, v1).await.unwrap(),
        (v1, vec![])
    );
    assert_eq!(store.views_changed_since(b, 0).await.unwrap(), (0, vec![]));
    assert_eq!(store.clear_history(a, &c, 4).await.unwrap(), 4);
    let (v2, changed) = store.views_changed_since(a, v1).await.unwrap();
    assert!(v2 > v1 && changed == [c], "{v2} {changed:?}");
    assert_eq!(store.clear_history(a, &c, 3).await.unwrap(), 4, "only up");
    let view = store.hidden_view(a, &c, 10).await.unwrap();
    assert_eq!((view.cleared_seq, view.hidden.as_slice()), (4, &[5][..]));
    // Below the cleared seq, hiding is moot.
    store.hide_messages(a, &c, &[1]).await.unwrap();
    assert_eq!(store.hidden_view(a, &c, 10).await.unwrap().hidden, [5]);
    let too_many: Vec<u64> = (1..=101).collect();
    let refused = store.hide_messages(a, &c, &too_many).await;
    assert!(
        matches!(refused, Err(StorageError::InvalidArgument(_))),
        "{refused:?}"
    );
}

/// Profiles are stored whole and read back (the default before any); display
/// names are searched by case-insensitive prefix, paged in (name, id) order.
pub async fn profiles_and_display_name_search(store: &dyn Storage, tag: &str) {
    let (a, b, c) = (
        user(store, tag, "a").await,
        user(store, tag, "b").await,
        user(store, tag, "c").await,
    );
    assert_eq!(store.profile(a).await.unwrap(), Profile::default());
    let profile = Profile {
        status: "at work".into(),
        avatar: "cd".repeat(32),
        custom: vec![("team".into(), "blue".into())],
        discoverable: false,
    };
    store.set_profile(a, &profile).await.unwrap();
    assert_eq!(store.profile(a).await.unwrap(), profile);
    let bad = Profile {
        status: "x".repeat(200),
        ..Profile::default()
    };
    assert!(store.set_profile(a, &bad).await.is_err());
    let prefix = format!("Zq{tag}");
    store
        .set_display_name(a, Some(&format!("{prefix} Ann")))
        .await
        .unwrap();
    store
        .set_display_name(b, Some(&format!("{prefix} anna")))
        .await
        .unwrap();
    store
        .set_display_name(c, Some(&format!("{prefix} Bob")))
        .await
        .unwrap();
    let lower = prefix.to_lowercase();
    let page = store
        .search_display_names(&format!("{lower} ann"), None, 10)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|h| h.0).collect::<Vec<_>>(), [a, b]);
    assert_eq!(page[0].1, format!("{prefix} Ann"));
    let first = store
        .search_display_names(&format!("{lower} ANN"), None, 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let key = search_key(&first[0].1);
    let next = store
        .search_display_names(&format!("{lower} ann"), Some((&key, first[0].0)), 10)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|h| h.0).collect::<Vec<_>>(), [b]);
    // A renamed user leaves the old name's results.
    store
        .set_display_name(b, Some(&format!("{prefix} Zed")))
        .await
        .unwrap();
    let page = store
        .search_display_names(&format!("{lower} ann"), None, 10)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|h| h.0).collect::<Vec<_>>(), [a]);
}

/// Read cursors move forward only; the index lists the conversation with its
/// cursor; mute and pin are kept.
pub async fn cursors_and_flags(store: &dyn Storage, tag: &str) {
    let (a, b) = (user(store, tag, "a").await, user(store, tag, "b").await);
    let c = ConversationId::direct(a, b).unwrap();
    for i in 0..3 {
        store
            .append(send(c, a, &format!("m{i}"), "hi"))
            .await
            .unwrap();
    }
    assert_eq!(store.mark_read(b, &c, 2).await.unwrap(), 2);
    assert_eq!(store.mark_read(b, &c, 1).await.unwrap(), 2);
    assert_eq!(store.note_delivered(b, &c, 3).await.unwrap(), 3);
    let state = store.conversation_state(b, &c).await.unwrap().unwrap();
    assert_eq!(state.read_seq, 2);
    let flags = store
        .set_conversation_flags(b, &c, Some(true), None)
        .await
        .unwrap();
    assert!(flags.muted && !flags.pinned);
    let listed = store.conversations(b).await.unwrap();
    let entry = listed.iter().find(|e| e.conversation == c).unwrap();
    assert_eq!((entry.last_seq, entry.state.read_seq), (3, 2));
    assert!(entry.state.muted);
    let stranger = user(store, tag, "stranger").await;
    let outside = store.mark_read(stranger, &c, 1).await;
    assert!(
        matches!(outside, Err(StorageError::NotParticipant)),
        "{outside:?}"
    );
}

/// Accounts, logins and tokens: a taken name, a wrong password, a password change
/// that keeps only the caller's token, revocation.
pub async fn accounts_and_tokens(store: &dyn Storage, tag: &str) {
    let name = format!("{tag}-owner");
    let account = store.register(&name, PASSWORD).await.unwrap();
    assert!(matches!(
        store.register(&name, PASSWORD).await,
        Err(StorageError::NameTaken)
    ));
    assert_eq!(
        store.account_by_name(&name).await.unwrap().unwrap().id,
        account.id
    );
    assert_eq!(store.account(account.id).await.unwrap().unwrap().name, name);
    // Display names: set, replaced, cleared; bad ones and unknown users refused.
    assert_eq!(store.display_name(account.id).await.unwrap(), None);
    store
        .set_display_name(account.id, Some("Ada Lovelace"))
        .await
        .unwrap();
    store
        .set_display_name(account.id, Some("Ada 🚀"))
        .await
        .unwrap();
    assert_eq!(
        store.display_name(account.id).await.unwrap().as_deref(),
        Some("Ada 🚀")
    );
    for bad in ["", "   ", "line\nbreak", &"x".repeat(65)] {
        assert!(store.set_display_name(account.id, Some(bad)).await.is_err());
    }
    assert!(store
        .set_display_name(u64::MAX >> 1, Some("ghost"))
        .await
        .is_err());
    store.set_display_name(account.id, None).await.unwrap();
    assert_eq!(store.display_name(account.id).await.unwrap(), None);
    assert!(matches!(
        store.login(&name, "wrong password").await,
        Err(StorageError::BadCredentials)
    ));
    let first = store.login(&name, PASSWORD).await.unwrap();
    let second = store.login(&name, PASSWORD).await.unwrap();
    let info = store.token_info(&first.token).await.unwrap().unwrap();
    assert_eq!(info.user_id, account.id);
    let kept = store.token_info(&second.token).await.unwrap().unwrap();
    assert_eq!(
        store
            .token_info_by_hash(&kept.hash)
            .await
            .unwrap()
            .unwrap()
            .user_id,
        account.id
    );
    let revoked = store
        .change_password(&name, PASSWORD, "a new password", &kept.hash)
        .await
        .unwrap();
    assert!(revoked.contains(&info.hash) && !revoked.contains(&kept.hash));
    assert!(store.token_info(&first.token).await.unwrap().is_none());
    assert!(store.token_info(&second.token).await.unwrap().is_some());
    assert!(store.login(&name, "a new password").await.is_ok());
    assert!(store.revoke_token_hash(&kept.hash).await.unwrap());
    assert!(store.token_info(&second.token).await.unwrap().is_none());
    assert!(!store.revoke_token_hash(&kept.hash).await.unwrap());

    // An account the application vouches for: made once, never by password, never
    // over a password account, never taken by a registration.
    let app_user = format!("{tag}-app.user");
    let first = store.external_account(&app_user).await.unwrap();
    assert_eq!(store.external_account(&app_user).await.unwrap(), first);
    assert_eq!(
        store.account_by_name(&app_user).await.unwrap(),
        Some(first.clone())
    );
    assert!(matches!(
        store.login(&app_user, "!external").await,
        Err(StorageError::BadCredentials)
    ));
    assert!(matches!(
        store.register(&app_user, PASSWORD).await,
        Err(StorageError::NameTaken)
    ));
    assert!(matches!(
        store.external_account(&name).await,
        Err(StorageError::NameTaken)
    ));
    assert!(store.external_account("Not A Name").await.is_err());
    assert!(!store.is_banned(first.id).await.unwrap());
    store.set_banned(first.id, true).await.unwrap();
    assert!(store.is_banned(first.id).await.unwrap());
    assert!(!store.is_banned(account.id).await.unwrap());
    store.set_banned(first.id, false).await.unwrap();
    assert!(!store.is_banned(first.id).await.unwrap());
    assert!(store.set_banned(1, true).await.is_err(), "no such user");
    let minted = store.issue_token(first.id).await.unwrap();
    assert_eq!(
        store
            .token_info(&minted.token)
            .await
            .unwrap()
            .unwrap()
            .user_id,
        first.id
    );
}

/// Devices: binding records them; removing one revokes the tokens it used.
pub async fn devices_bind_and_remove(store: &dyn Storage, tag: &str) {
    let name = format!("{tag}-owner");
    let id = store.register(&name, PASSWORD).await.unwrap().id;
    let session = store.login(&name, PASSWORD).await.unwrap();
    let hash = store
        .token_info(&session.token)
        .await
        .unwrap()
        .unwrap()
        .hash;
    let bound = store
        .bind_device(id, "laptop", 1, 1_000, Some(&hash))
        .await
        .unwrap();
    assert_eq!(bound.device.device_id, "laptop");
    store
        .bind_device(id, "phone", 2, 2_000, None)
        .await
        .unwrap();
    let devices = store.devices(id).await.unwrap();
    assert_eq!(devices.len(), 2);
    // Push registrations: kept across logins, replaced only while still current.
    let push = PushToken {
        provider: PushProvider::Fcm,
        token: format!("{tag}-fcm-token"),
        app_id: "example-project".into(),
        sandbox: false,
        credential: hash,
        credential_expires_ms: 0,
        registered_ms: 3_000,
    };
    assert!(!store
        .set_push_token(id, "tablet", Some(push.clone()), None)
        .await
        .unwrap());
    assert!(store
        .set_push_token(id, "phone", Some(push.clone()), None)
        .await
        .unwrap());
    store
        .bind_device(id, "phone", 2, 4_000, None)
        .await
        .unwrap();
    let phone = |devices: Vec<courier_storage::Device>| {
        devices
            .into_iter()
            .find(|d| d.device_id == "phone")
            .unwrap()
    };
    assert_eq!(
        phone(store.devices(id).await.unwrap()).push,
        Some(push.clone())
    );
    assert!(!store
        .set_push_token(id, "phone", None, Some("another token"))
        .await
        .unwrap());
    assert!(store
        .set_push_token(id, "phone", None, Some(&push.token))
        .await
        .unwrap());
    assert_eq!(phone(store.devices(id).await.unwrap()).push, None);
    // A token has one holder: another user's device registering it takes it.
    store
        .set_push_token(id, "phone", Some(push.clone()), None)
        .await
        .unwrap();
    let other = user(store, tag, "next-owner").await;
    store
        .bind_device(other, "phone", 2, 5_000, None)
        .await
        .unwrap();
    assert!(store
        .set_push_token(other, "phone", Some(push.clone()), None)
        .await
        .unwrap());
    assert_eq!(phone(store.devices(id).await.unwrap()).push, None);
    assert_eq!(
        phone(store.devices(other).await.unwrap()).push,
        Some(push.clone())
    );
    let removed = store.remove_device(id, "laptop").await.unwrap().unwrap();
    assert!(removed.tokens.contains(&hash));
    assert!(store.token_info(&session.token).await.unwrap().is_none());
    assert!(store.remove_device(id, "laptop").await.unwrap().is_none());
    assert!(store.unbind_device(id, "phone").await.unwrap().is_some());
    assert!(store.devices(id).await.unwrap().is_empty());
}

/// Relations change both sides at once, by the shared rules; sets list them.
pub async fn relations_follow_the_rules(store: &dyn Storage, tag: &str) {
    let (a, b, c) = (
        user(store, tag, "a").await,
        user(store, tag, "b").await,
        user(store, tag, "c").await,
    );
    let asked = store
        .change_relation(a, b, RelationChange::Request)
        .await
        .unwrap();
    assert_eq!(asked, Ok(Some(RequestOutcome::Pending)));
    let pending = store
        .relations(b, 0, 10, RelationSet::RequestsReceived)
        .await
        .unwrap();
    assert_eq!(pending.iter().map(|p| p.0).collect::<Vec<_>>(), [a]);
    store
        .change_relation(b, a, RelationChange::Accept)
        .await
        .unwrap()
        .unwrap();
    assert!(store.relation(a, b).await.unwrap().friend);
    assert!(store.relation(b, a).await.unwrap().friend);
    store
        .change_relation(c, a, RelationChange::Block(true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .change_relation(a, c, RelationChange::Request)
            .await
            .unwrap(),
        Err(RelationRefusal::Blocked)
    );
    assert!(store.relation(a, c).await.unwrap().blocked_by);
    let friends = store
        .relations(a, 0, 10, RelationSet::Friends)
        .await
        .unwrap();
    assert_eq!(friends.iter().map(|p| p.0).collect::<Vec<_>>(), [b]);
    assert_eq!(store.befriend_many(c, &[a, b]).await.unwrap(), 1);
    assert!(store.relation(b, c).await.unwrap().friend);
}

/// Groups: creation with its events, additions, roles, removal; a removed member
/// can no longer write; invitations.
/// Bans are group changes with their events: a banned member is removed (and can
/// no longer write); nobody banned is added until the ban is lifted; the bans are
/// listed. Join requests are kept, replaced, listed and taken.
pub async fn bans_keep_users_out(store: &dyn Storage, tag: &str) {
    let (owner, m, x, y) = (
        user(store, tag, "owner").await,
        user(store, tag, "m").await,
        user(store, tag, "x").await,
        user(store, tag, "y").await,
    );
    let g = store
        .create_group(
            owner,
            "strict",
            JoinPolicy::Approval,
            true,
            &[m],
            event(owner, "created"),
        )
        .await
        .unwrap()
        .info
        .unwrap()
        .id;
    assert_eq!(
        store.group(g).await.unwrap().unwrap().join_policy,
        JoinPolicy::Approval
    );
    let c = ConversationId::Group(g);
    let ban = |user: u64, banned: bool, id: &'static str| async move {
        store
            .change_group(
                g,
                GroupChange::Ban {
                    user,
                    banned,
                    by: owner,
                },
                event(owner, id),
            )
            .await
            .unwrap()
    };
    let banned = ban(m, true, "ban-m").await.unwrap();
    assert_eq!(banned.removed, vec![m]);
    assert_eq!(banned.events.len(), 1);
    assert!(store.member(g, m).await.unwrap().is_none());
    assert!(store.banned(g, m).await.unwrap());
    let refused = store.append(send(c, m, "m1", "still here?")).await;
    assert!(
        matches!(refused, Err(StorageError::NotParticipant)),
        "{refused:?}"
    );
    // A stranger banned ahead of time; banning twice changes nothing.
    assert_eq!(ban(x, true, "ban-x").await.unwrap().events.len(), 1);
    assert!(ban(x, true, "ban-x-again").await.unwrap().events.is_empty());
    assert_eq!(
        ban(owner, true, "ban-owner").await.unwrap_err(),
        MembershipRefusal::IsOwner
    );
    let add = |users: Vec<u64>, id: &'static str| async move {
        store
            .change_group(
                g,
                GroupChange::Add {
                    users,
                    role: Role::Member,
                    max_members: 100,
                },
                event(owner, id),
            )
            .await
            .unwrap()
    };
    assert_eq!(
        add(vec![m], "add-m").await.unwrap_err(),
        MembershipRefusal::Banned
    );
    let mixed = add(vec![x, y], "add-xy").await.unwrap();
    assert_eq!((mixed.added.added, mixed.added.banned), (vec![y], vec![x]));
    let bans = store.bans(g, 0, 10).await.unwrap();
    let mut expected = vec![m, x];
    expected.sort_unstable();
    assert_eq!(bans.iter().map(|b| b.user_id).collect::<Vec<_>>(), expected);
    assert!(bans.iter().all(|b| b.by_user == owner && b.at_ms > 0));
    assert_eq!(store.bans(g, expected[0], 10).await.unwrap().len(), 1);
    // Lifted: the user may come back.
    assert_eq!(ban(m, false, "unban-m").await.unwrap().events.len(), 1);
    assert!(ban(m, false, "unban-m-again")
        .await
        .unwrap()
        .events
        .is_empty());
    assert!(!store.banned(g, m).await.unwrap());
    assert_eq!(
        add(vec![m], "add-m-again").await.unwrap().added.added,
        vec![m]
    );

    // Join requests.
    assert!(store.request_join(g, x, "let me in", 10).await.unwrap());
    assert!(!store.request_join(g, x, "please", 20).await.unwrap());
    assert!(store.request_join(g, y, "", 30).await.unwrap());
    let pending = store.join_requests(g, 0, 10).await.unwrap();
    let mut expected = vec![(x, "please".to_owned(), 20), (y, String::new(), 30)];
    expected.sort_unstable();
    assert_eq!(
        pending
            .iter()
            .map(|r| (r.user_id, r.message.clone(), r.created_ms))
            .collect::<Vec<_>>(),
        expected
    );
    assert!(pending.iter().all(|r| r.group_id == g));
    assert_eq!(store.join_requests(g, 0, 1).await.unwrap().len(), 1);
    assert!(store
        .request_join(g, x, &"x".repeat(513), 40)
        .await
        .is_err());
    let taken = store.take_join_request(g, x).await.unwrap().unwrap();
    assert_eq!((taken.user_id, taken.message.as_str()), (x, "please"));
    assert!(store.take_join_request(g, x).await.unwrap().is_none());
    assert_eq!(store.join_requests(g, 0, 10).await.unwrap().len(), 1);
}

/// Mutes are group changes with their events, and sends are checked against them
/// in order: a muted member's sends are refused from the mute on; a muted group
/// lets only its owner and admins send.
pub async fn mutes_refuse_sends_in_order(store: &dyn Storage, tag: &str) {
    let (owner, admin, m) = (
        user(store, tag, "owner").await,
        user(store, tag, "admin").await,
        user(store, tag, "m").await,
    );
    let info = store
        .create_group(
            owner,
            "quiet",
            JoinPolicy::InviteOnly,
            true,
            &[admin, m],
            event(owner, "created"),
        )
        .await
        .unwrap()
        .info
        .unwrap();
    let g = info.id;
    let c = ConversationId::Group(g);
    let change = |change: GroupChange, id: &'static str| async move {
        store
            .change_group(g, change, event(owner, id))
            .await
            .unwrap()
            .unwrap()
    };
    change(
        GroupChange::SetRole {
            user: admin,
            role: Role::Admin,
        },
        "admin",
    )
    .await;
    let far = courier_storage::now_ms() + 3_600_000;
    let muted = change(
        GroupChange::MuteMember {
            user: m,
            until_ms: far,
        },
        "mute-m",
    )
    .await;
    assert_eq!(muted.member.unwrap().muted_until_ms, far);
    assert_eq!(
        store.member(g, m).await.unwrap().unwrap().muted_until_ms,
        far
    );
    let refused = store.append(send(c, m, "m1", "hi")).await;
    assert!(
        matches!(refused, Err(StorageError::Muted { until_ms }) if until_ms == far),
        "{refused:?}"
    );
    let refused = store
        .change_group(
            g,
            GroupChange::MuteMember {
                user: owner,
                until_ms: far,
            },
            event(owner, "x"),
        )
        .await
        .unwrap();
    assert_eq!(refused.unwrap_err(), MembershipRefusal::IsOwner);
    change(
        GroupChange::MuteMember {
            user: m,
            until_ms: 0,
        },
        "unmute-m",
    )
    .await;
    store.append(send(c, m, "m2", "back")).await.unwrap();
    // The whole group: only the owner and admins.
    let all = change(GroupChange::MuteAll { muted: true }, "mute-all").await;
    assert!(all.info.unwrap().muted);
    assert!(store.group(g).await.unwrap().unwrap().muted);
    let refused = store.append(send(c, m, "m3", "hi")).await;
    assert!(
        matches!(refused, Err(StorageError::Muted { until_ms: u64::MAX })),
        "{refused:?}"
    );
    store
        .append(send(c, admin, "a1", "announcement"))
        .await
        .unwrap();
    store.append(send(c, owner, "o1", "indeed")).await.unwrap();
    change(GroupChange::MuteAll { muted: false }, "unmute-all").await;
    store.append(send(c, m, "m4", "free")).await.unwrap();
    // Dismissed: nobody sends, nothing changes any more; the record stays.
    change(GroupChange::Dismiss, "dismissed").await;
    for (who, id) in [(m, "m5"), (owner, "o2")] {
        let refused = store.append(send(c, who, id, "hello?")).await;
        assert!(
            matches!(refused, Err(StorageError::NotParticipant)),
            "{refused:?}"
        );
    }
    let again = store
        .change_group(
            g,
            GroupChange::MuteAll { muted: true },
            event(owner, "late"),
        )
        .await
        .unwrap();
    assert_eq!(again.unwrap_err(), MembershipRefusal::NoGroup);
    assert!(store.group(g).await.unwrap().unwrap().dismissed);
}

pub async fn groups_change_with_their_events(store: &dyn Storage, tag: &str) {
    let (owner, m1, m2) = (
        user(store, tag, "owner").await,
        user(store, tag, "m1").await,
        user(store, tag, "m2").await,
    );
    let created = store
        .create_group(
            owner,
            "team",
            JoinPolicy::InviteOnly,
            true,
            &[m1],
            event(owner, "created"),
        )
        .await
        .unwrap();
    let info = created.info.unwrap();
    assert_eq!((info.owner, info.member_count), (owner, 2));
    assert_eq!(created.events.len(), 1);
    let c = ConversationId::Group(info.id);
    assert_eq!(store.last_seq(&c).await.unwrap(), created.events[0].seq);
    let added = store
        .change_group(
            info.id,
            GroupChange::Add {
                users: vec![m2, m1],
                role: Role::Member,
                max_members: 10,
            },
            event(owner, "added"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(added.added.added, [m2]);
    assert_eq!(added.added.already_members, [m1]);
    let ids: Vec<u64> = store
        .member_ids(info.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let promoted = store
        .change_group(
            info.id,
            GroupChange::SetRole {
                user: m1,
                role: Role::Admin,
            },
            Box::new(|_| Vec::new()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(promoted.member.unwrap().role, Role::Admin);
    store.append(send(c, m2, "hello", "hi all")).await.unwrap();
    store
        .change_group(
            info.id,
            GroupChange::Remove { user: m2 },
            event(owner, "removed"),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(store.member(info.id, m2).await.unwrap().is_none());
    let after = store.append(send(c, m2, "still there?", "hi")).await;
    assert!(
        matches!(after, Err(StorageError::NotParticipant)),
        "{after:?}"
    );
    // The server itself (sender 0) writes notices into any group.
    let notice = store.append(send(c, 0, "notice-1", "maintenance")).await;
    assert!(notice.is_ok(), "{notice:?}");
    let owner_out = store
        .change_group(
            info.id,
            GroupChange::Remove { user: owner },
            event(owner, "owner-out"),
        )
        .await
        .unwrap();
    assert_eq!(owner_out.err(), Some(MembershipRefusal::IsOwner));
    assert_eq!(store.members(info.id, 0, 10).await.unwrap().len(), 2);
    assert!(store.invite(m2, info.id, owner, 5).await.unwrap());
    let invitations = store.invitations(m2).await.unwrap();
    assert_eq!(invitations.len(), 1);
    assert_eq!(invitations[0].inviter, owner);
    assert!(store.take_invitation(m2, info.id).await.unwrap().is_some());
    assert!(store.take_invitation(m2, info.id).await.unwrap().is_none());
    assert_eq!(store.group(info.id).await.unwrap().unwrap().name, "team");
}

/// Media records: one record per content hash, owners, status and reference marks.
pub async fn media_records(store: &dyn Storage, tag: &str) {
    let owner = user(store, tag, "owner").await;
    let other = user(store, tag, "other").await;
    let sha256 = format!("{:0>64}", format!("{:x}", owner));
    let record = BlobRecord {
        sha256: sha256.clone(),
        size: 10,
        mime: "image/png".into(),
        width: 2,
        height: 3,
        created_ms: 7,
        status: BlobStatus::Quarantined,
        referenced: false,
    };
    assert_eq!(store.put_blob(&record).await.unwrap(), record);
    store.add_blob_owner(&sha256, owner).await.unwrap();
    assert!(store.is_blob_owner(&sha256, owner).await.unwrap());
    assert!(!store.is_blob_owner(&sha256, other).await.unwrap());
    let released = store
        .update_blob(&sha256, BlobUpdate::Status(BlobStatus::Available))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(released.status, BlobStatus::Available);
    let referenced = store
        .update_blob(&sha256, BlobUpdate::Referenced)
        .await
        .unwrap()
        .unwrap();
    assert!(referenced.referenced && referenced.status == BlobStatus::Available);
    assert!(store.blobs().await.unwrap().contains(&referenced));
    store.delete_blob(&sha256).await.unwrap();
    assert!(store.blob(&sha256).await.unwrap().is_none());
    assert!(!store.is_blob_owner(&sha256, owner).await.unwrap());
}

/// Retention prunes below a seq and says where history now starts.
pub async fn retention_prunes_history(store: &dyn Storage, tag: &str) {
    let (a, b) = (user(store, tag, "a").await, user(store, tag, "b").await);
    let c = ConversationId::direct(a, b).unwrap();
    for i in 0..4 {
        store
            .append(send(c, a, &format!("m{i}"), "old"))
            .await
            .unwrap();
    }
    assert_eq!(store.first_retained_seq(&c).await.unwrap(), 1);
    assert!(store.all_conversations().await.unwrap().contains(&(c, 4)));
    assert_eq!(store.prune_history(&c, 3).await.unwrap(), 2);
    assert_eq!(store.first_retained_seq(&c).await.unwrap(), 3);
    let left = store.history(&c, HistoryRange::Latest, 10).await.unwrap();
    assert_eq!(
        left.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(store.first_seq_since(&c, 0).await.unwrap(), Some(3));
}

/// Health and shutdown: writable while running; writes after shutdown are refused.
pub async fn shutdown_refuses_later_writes(store: &dyn Storage, tag: &str) {
    let (a, b) = (user(store, tag, "a").await, user(store, tag, "b").await);
    let c = ConversationId::direct(a, b).unwrap();
    assert!(store.writable());
    store.append(send(c, a, "before", "hi")).await.unwrap();
    store.shutdown().await.unwrap();
    store.shutdown().await.unwrap();
    let after = store.append(send(c, a, "after", "hi")).await;
    assert!(
        matches!(after, Err(StorageError::ShuttingDown)),
        "{after:?}"
    );
}
