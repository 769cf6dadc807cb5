using System.Buffers;
using System.Collections;
using System.Reflection;

namespace Bursar.Gateway.Proxy;

/// <summary>
/// Drops the large arrays <see cref="ArrayPool{T}.Shared"/> holds. System.Text.Json rents from that pool for every
/// multi-megabyte body it parses (JsonDocument's metadata: an 8 MiB array for a 5 MB body) or writes (the escape
/// buffer: up to six times the longest string; the output buffer, doubling), and the pool keeps what comes back: one
/// array per size per thread and up to 32 per size per core, handed back to the GC only on gen-2 collections under
/// high memory pressure or a minute or more later, so an idle gateway kept them for good (issue 11: about 110 MB of
/// 2 to 8 MiB arrays after thirty 5 MB bodies). The pool has no public way to let them go; this clears its slots for
/// arrays of at least a given size by reflection, the same slots the runtime's own trim clears under pressure, and
/// does nothing (returns -1) when the runtime's pool is not laid out as expected.
/// </summary>
public static class SharedArrayPoolRelease
{
    private const BindingFlags Private = BindingFlags.NonPublic | BindingFlags.Instance;

    /// <summary>
    /// Forgets every array of at least <paramref name="minBytes"/> bytes in <see cref="ArrayPool{T}.Shared"/> (the
    /// per-core stacks and every thread's own slot); they become garbage for the next collection. Arrays rented at the
    /// time are unaffected: once returned, they are pooled again. Returns the bytes dropped, or -1 if the pool could not be read.
    /// </summary>
    public static long Release<T>(int minBytes)
    {
        try
        {
            var pool = ArrayPool<T>.Shared;
            var type = pool.GetType();
            if (type.GetField("_buckets", Private)?.GetValue(pool) is not Array buckets
                || type.GetField("_allTlsBuckets", Private)?.GetValue(pool) is not IEnumerable threadSlots)
                return -1;
            var elementSize = typeof(T).IsValueType ? System.Runtime.CompilerServices.Unsafe.SizeOf<T>() : IntPtr.Size;
            var first = FirstBucket(Math.Max(16, minBytes / elementSize));
            long dropped = 0;
            // the per-core stacks: a bucket's whole set of partitions goes; the pool makes a new, empty one when an array of that size is returned
            for (var i = first; i < buckets.Length; i++)
            {
                if (buckets.GetValue(i) is not { } partitions) continue;
                dropped += PartitionBytes(partitions, elementSize);
                buckets.SetValue(null, i);
            }
            // each thread's one array per size (ThreadLocalArray[] per thread, weakly tracked by the pool)
            foreach (var entry in threadSlots)
            {
                if (entry?.GetType().GetProperty("Key")?.GetValue(entry) is not Array slots) continue;
                for (var i = first; i < slots.Length; i++)
                {
                    if (slots.GetValue(i) is { } slot && slot.GetType().GetField("Array")?.GetValue(slot) is T[] array) dropped += (long)array.Length * elementSize;
                }
                if (first < slots.Length) Array.Clear(slots, first, slots.Length - first);
            }
            return dropped;
        }
        catch (Exception e) when (e is TargetException or FieldAccessException or ArgumentException or InvalidCastException or NotSupportedException or MemberAccessException)
        {
            return -1;
        }
    }

    /// <summary>The pool's bucket for arrays of <paramref name="length"/> elements (buckets hold 16, 32, 64, ... elements).</summary>
    private static int FirstBucket(int length) => System.Numerics.BitOperations.Log2((uint)(length - 1) | 15) - 3;

    private static long PartitionBytes(object partitions, int elementSize)
    {
        long bytes = 0;
        if (partitions.GetType().GetField("_partitions", Private)?.GetValue(partitions) is not Array parts) return 0;
        foreach (var part in parts)
        {
            if (part?.GetType().GetField("_arrays", Private)?.GetValue(part) is not Array arrays) continue;
            foreach (var a in arrays)
                if (a is Array array) bytes += (long)array.Length * elementSize;
        }
        return bytes;
    }
}
