"""An endless, resumable training stream built on :class:`DistributedSampler`.

Training is measured in optimizer steps, not epochs, so the sampler never ends: it walks epoch
0, 1, 2, ... and tags each index with its epoch. The epoch tag reaches the dataset, which seeds
the sample's augmentation and corruption from ``(seed, epoch, index)``; the same image therefore
gets a fresh corruption every epoch, yet any sample can be reproduced exactly.

Resuming after ``start_sample`` consumed samples jumps straight to the right epoch and offset, so
a resumed run sees exactly the samples an uninterrupted run would have seen next.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler

from enfold.errors import EnfoldError


class StreamSampler(DistributedSampler):
    """Infinite stream of ``(epoch, index)`` pairs for one rank.

    Each epoch ``e`` is exactly ``DistributedSampler`` with ``shuffle=True, drop_last=False`` after
    ``set_epoch(e)``: a permutation seeded by ``seed + e``, padded to a multiple of
    ``num_replicas`` and strided by rank. ``num_replicas`` and ``rank`` are explicit, so no process
    group is needed. ``start_sample`` is how many samples this rank already consumed; iteration
    begins right after them. ``len(sampler)`` is the per-epoch count for this rank.
    """

    def __init__(
        self,
        dataset_len_or_dataset: int | Sized,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        start_sample: int = 0,
    ) -> None:
        if isinstance(dataset_len_or_dataset, int):
            dataset: Sized = range(dataset_len_or_dataset)  # only its length is ever used
        else:
            dataset = dataset_len_or_dataset
        if len(dataset) < 1:
            raise EnfoldError("cannot stream samples from an empty data set")
        if start_sample < 0:
            raise EnfoldError(f"start_sample must be >= 0, got {start_sample}")
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.start_sample = int(start_sample)

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch``, exactly as ``DistributedSampler`` orders them."""
        self.set_epoch(epoch)
        return list(super().__iter__())

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        # Jump to the resume point arithmetically; only one permutation per epoch is computed.
        epoch, offset = divmod(self.start_sample, self.num_samples)
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                yield epoch, index
            epoch += 1
            offset = 0
