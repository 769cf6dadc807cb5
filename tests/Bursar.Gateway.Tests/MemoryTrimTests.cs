using System.Buffers;
using System.Runtime.CompilerServices;
using Bursar.Gateway.Proxy;

namespace Bursar.Gateway.Tests;

/// <summary>
/// Issue 11: the arrays <see cref="ArrayPool{T}.Shared"/> keeps after large bodies (System.Text.Json's parse and write
/// buffers) are let go when the trim runs. If a runtime update lays the pool out differently, this fails here rather
/// than the gateway silently holding them again.
/// </summary>
public sealed class MemoryTrimTests
{
    // 32 MiB arrays: a size no other test rents, so nothing else takes them out of the pool meanwhile
    private const int Size = 16 * 1024 * 1024 + 1;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference[] RentAndReturn(int count)
    {
        var arrays = Enumerable.Range(0, count).Select(_ => ArrayPool<byte>.Shared.Rent(Size)).ToArray();
        foreach (var a in arrays) ArrayPool<byte>.Shared.Return(a); // the last one stays in this thread's slot, the others go to the per-core stacks
        return [.. arrays.Select(a => new WeakReference(a))];
    }

    [Fact]
    public void The_shared_pool_forgets_its_large_arrays_on_this_thread_on_others_and_in_the_per_core_stacks()
    {
        WeakReference[] theirs = [];
        using var released = new ManualResetEventSlim();
        using var returned = new ManualResetEventSlim();
        var other = new Thread(() =>
        {
            theirs = RentAndReturn(1);
            returned.Set();
            released.Wait(); // alive while the release runs: its slot is cleared, not dropped with the thread
        });
        other.Start();
        returned.Wait();
        var mine = RentAndReturn(2); // after the other thread's: its array stays in its own slot, not taken from the stacks

        var dropped = SharedArrayPoolRelease.Release<byte>(1024 * 1024);
        released.Set();
        other.Join();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);

        Assert.True(dropped >= 3L * 32 * 1024 * 1024, $"dropped {dropped} bytes: the pool's layout was not read (-1) or missed arrays");
        Assert.All(mine.Concat(theirs), w => Assert.False(w.IsAlive, "a released array is still referenced by the pool"));
        // the pool works as before: a new array, pooled again
        var again = ArrayPool<byte>.Shared.Rent(Size);
        ArrayPool<byte>.Shared.Return(again);
        Assert.Same(again, ArrayPool<byte>.Shared.Rent(Size));
    }

    [Fact]
    public void Arrays_below_the_threshold_stay_pooled()
    {
        var small = ArrayPool<byte>.Shared.Rent(64 * 1024);
        ArrayPool<byte>.Shared.Return(small);
        Assert.True(SharedArrayPoolRelease.Release<byte>(1024 * 1024) >= 0);
        Assert.Same(small, ArrayPool<byte>.Shared.Rent(64 * 1024)); // this thread's slot for 64 KiB arrays was left alone
    }
}
