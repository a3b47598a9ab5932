//! The bounded buffers that hold emits while a socket is not connected (the offline queue)
//! and emits waiting their turn in the retry queue.

use std::collections::VecDeque;

/// What happens to an emit that finds its queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The new emit is refused with [`EmitError::QueueFull`](crate::EmitError::QueueFull);
    /// the queue keeps what it had. The default: nothing is lost silently.
    #[default]
    Error,
    /// The new emit is dropped; `emit` still returns `Ok`.
    DropNewest,
    /// The oldest queued emit is dropped (its ack, if any, fails with
    /// [`AckError::Dropped`](crate::AckError::Dropped)) to make room.
    DropOldest,
}

/// Bounds of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most packets held (default 1024).
    pub capacity: usize,
    /// What to do when it is full.
    pub overflow: Overflow,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            capacity: 1024,
            overflow: Overflow::Error,
        }
    }
}

/// What [`Bounded::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed<T> {
    /// Queued.
    Queued,
    /// Queued, and this oldest item was dropped for it.
    Evicted(T),
    /// Not queued (drop-newest), handed back.
    Dropped(T),
    /// Not queued (error policy), handed back.
    Refused(T),
}

/// A FIFO with a capacity and an overflow policy.
#[derive(Debug)]
pub(crate) struct Bounded<T> {
    items: VecDeque<T>,
    limits: QueueLimits,
}

impl<T> Bounded<T> {
    pub(crate) fn new(limits: QueueLimits) -> Self {
        Self {
            items: VecDeque::new(),
            limits,
        }
    }

    pub(crate) fn push(&mut self, item: T) -> Pushed<T> {
        if self.items.len() < self.limits.capacity {
            self.items.push_back(item);
            return Pushed::Queued;
        }
        match self.limits.overflow {
            Overflow::Error => Pushed::Refused(item),
            Overflow::DropNewest => Pushed::Dropped(item),
            Overflow::DropOldest => match self.items.pop_front() {
                Some(oldest) => {
                    self.items.push_back(item);
                    Pushed::Evicted(oldest)
                }
                // Capacity 0: nothing can be held.
                None => Pushed::Dropped(item),
            },
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn drain(&mut self) -> std::collections::vec_deque::Drain<'_, T> {
        self.items.drain(..)
    }

    /// Removes the items `remove` selects, keeping the order of the rest.
    pub(crate) fn remove_where(&mut self, mut remove: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(self.items.len());
        for item in self.items.drain(..) {
            if remove(&item) {
                removed.push(item);
            } else {
                kept.push_back(item);
            }
        }
        self.items = kept;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(capacity: usize, overflow: Overflow) -> Bounded<u32> {
        Bounded::new(QueueLimits { capacity, overflow })
    }

    #[test]
    fn keeps_order_below_capacity() {
        let mut q = queue(3, Overflow::Error);
        for i in 0..3 {
            assert_eq!(q.push(i), Pushed::Queued);
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.drain().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn error_policy_refuses_the_new_item() {
        let mut q = queue(2, Overflow::Error);
        q.push(1);
        q.push(2);
        assert_eq!(q.push(3), Pushed::Refused(3));
        assert_eq!(q.drain().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn drop_newest_discards_the_new_item() {
        let mut q = queue(2, Overflow::DropNewest);
        q.push(1);
        q.push(2);
        assert_eq!(q.push(3), Pushed::Dropped(3));
        assert_eq!(q.drain().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn drop_oldest_evicts_the_front() {
        let mut q = queue(2, Overflow::DropOldest);
        q.push(1);
        q.push(2);
        assert_eq!(q.push(3), Pushed::Evicted(1));
        assert_eq!(q.push(4), Pushed::Evicted(2));
        assert_eq!(q.drain().collect::<Vec<_>>(), vec![3, 4]);
        let mut none = queue(0, Overflow::DropOldest);
        assert_eq!(none.push(1), Pushed::Dropped(1));
    }

    #[test]
    fn remove_where_keeps_the_rest_in_order() {
        let mut q = queue(10, Overflow::Error);
        for i in 0..6 {
            q.push(i);
        }
        assert_eq!(q.remove_where(|i| i % 2 == 0), vec![0, 2, 4]);
        assert_eq!(q.drain().collect::<Vec<_>>(), vec![1, 3, 5]);
    }
}
