using System.Numerics.Tensors;

namespace Bursar.Core.Caching.Semantic;

/// <summary>A nearest-neighbour index of the semantic cache: entries per partition, the most similar one (cosine of L2-normalized vectors) per query.</summary>
public interface IVectorIndex<T>
{
    int Count { get; }
    /// <summary>About how many bytes the index holds.</summary>
    long Bytes { get; }
    /// <summary>At most how many bytes <see cref="Add"/> of <paramref name="vector"/> to <paramref name="partition"/> would add to <see cref="Bytes"/>.</summary>
    long CostOf(string partition, ReadOnlySpan<float> vector);
    void Add(string partition, ReadOnlySpan<float> vector, T item);
    /// <summary>The most similar item in the partition and its exact cosine, or none when the partition is empty.</summary>
    (T? Item, float Score) Nearest(string partition, ReadOnlySpan<float> query);
    /// <summary>Removes <paramref name="item"/> (by reference) from the partition; false when it is not there.</summary>
    bool Remove(string partition, T item);
    /// <summary>Removes every item <paramref name="stale"/> says is (expired entries); returns how many.</summary>
    int RemoveWhere(Func<T, bool> stale);
}

/// <summary>Builds the index a semantic cache keeps its entries in (an encoder may bring its own, e.g. an approximate one for large partitions).</summary>
public interface IVectorIndexFactory
{
    IVectorIndex<T> Create<T>(int dimensions) where T : class;
}

/// <summary>
/// An in-process exact nearest-neighbour index over dense L2-normalized vectors (a learned encoder's): one contiguous float
/// array per partition (tenant, model, system prompt), scanned with SIMD dot products (<see cref="TensorPrimitives"/>).
/// 4 bytes per dimension per entry (1.5 KiB for MiniLM's 384).
/// </summary>
public sealed class VectorIndex<T>(int dimensions) : IVectorIndex<T>
{
    /// <summary>Entries a new partition has room for before its array doubles (many partitions hold few entries).</summary>
    private const int InitialEntries = 16;

    private sealed class Partition(int dimensions)
    {
        public float[] Vectors = new float[InitialEntries * dimensions];
        public readonly List<T> Items = [];
        public readonly ReaderWriterLockSlim Lock = new();
    }

    private readonly Dictionary<string, Partition> _partitions = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    public int Dimensions => dimensions;

    private int _count;
    private long _bytes;

    public int Count => Volatile.Read(ref _count);

    public long Bytes => Interlocked.Read(ref _bytes);

    public long CostOf(string partition, ReadOnlySpan<float> vector)
    {
        bool known;
        lock (_lock) known = _partitions.ContainsKey(partition);
        // a new partition's first array; else an entry's floats (charged when the array doubles) and its item slot
        return (known ? 0 : 4L * InitialEntries * dimensions + 2L * partition.Length + 256) + 4L * dimensions + IntPtr.Size;
    }

    public void Add(string partition, ReadOnlySpan<float> vector, T item)
    {
        if (vector.Length != dimensions) throw new ArgumentException($"Expected {dimensions} dimensions, got {vector.Length}.", nameof(vector));
        Partition p;
        lock (_lock)
        {
            if (!_partitions.TryGetValue(partition, out p!))
            {
                _partitions[partition] = p = new Partition(dimensions);
                Interlocked.Add(ref _bytes, 4L * p.Vectors.Length + 2L * partition.Length + 256);
            }
        }
        p.Lock.EnterWriteLock();
        try
        {
            var n = p.Items.Count;
            if ((n + 1) * dimensions > p.Vectors.Length)
            {
                var old = p.Vectors.Length;
                Array.Resize(ref p.Vectors, Math.Max(p.Vectors.Length * 2, (n + 1) * dimensions));
                Interlocked.Add(ref _bytes, 4L * (p.Vectors.Length - old));
            }
            vector.CopyTo(p.Vectors.AsSpan(n * dimensions, dimensions));
            p.Items.Add(item);
            Interlocked.Add(ref _bytes, IntPtr.Size);
        }
        finally
        {
            p.Lock.ExitWriteLock();
        }
        Interlocked.Increment(ref _count);
    }

    public bool Remove(string partition, T item)
    {
        Partition? p;
        lock (_lock) _partitions.TryGetValue(partition, out p);
        if (p is null) return false;
        p.Lock.EnterWriteLock();
        try
        {
            for (var i = 0; i < p.Items.Count; i++)
                if (ReferenceEquals(p.Items[i], item)) { RemoveAt(p, i); return true; }
            return false;
        }
        finally
        {
            p.Lock.ExitWriteLock();
        }
    }

    public int RemoveWhere(Func<T, bool> stale)
    {
        Partition[] all;
        lock (_lock) all = [.. _partitions.Values];
        var removed = 0;
        foreach (var p in all)
        {
            p.Lock.EnterWriteLock();
            try
            {
                for (var i = p.Items.Count - 1; i >= 0; i--)
                    if (stale(p.Items[i])) { RemoveAt(p, i); removed++; }
            }
            finally
            {
                p.Lock.ExitWriteLock();
            }
        }
        return removed;
    }

    /// <summary>The last entry moves into the hole (order does not matter to a nearest-neighbour scan).</summary>
    private void RemoveAt(Partition p, int i)
    {
        var last = p.Items.Count - 1;
        if (i != last)
        {
            p.Vectors.AsSpan(last * dimensions, dimensions).CopyTo(p.Vectors.AsSpan(i * dimensions, dimensions));
            p.Items[i] = p.Items[last];
        }
        p.Items.RemoveAt(last);
        Interlocked.Add(ref _bytes, -IntPtr.Size); // the array keeps its length: its floats stay charged
        Interlocked.Decrement(ref _count);
    }

    /// <summary>The most similar item (cosine) in the partition, or none when it is empty.</summary>
    public (T? Item, float Score) Nearest(string partition, ReadOnlySpan<float> query)
    {
        Partition? p;
        lock (_lock) _partitions.TryGetValue(partition, out p);
        if (p is null) return (default, float.NegativeInfinity);
        p.Lock.EnterReadLock();
        try
        {
            var best = -1;
            var bestScore = float.NegativeInfinity;
            var span = p.Vectors.AsSpan();
            for (var i = 0; i < p.Items.Count; i++)
            {
                var s = TensorPrimitives.Dot(span.Slice(i * dimensions, dimensions), query);
                if (s > bestScore) { bestScore = s; best = i; }
            }
            return best < 0 ? (default, bestScore) : (p.Items[best], bestScore);
        }
        finally
        {
            p.Lock.ExitReadLock();
        }
    }
}
