using System.Buffers;

namespace Bursar.Core.Caching.Semantic;

/// <summary>
/// A nearest-neighbour index for sparse, L2-normalized vectors (the local generator fills about 200 of 4,096 buckets):
/// an inverted index per partition. A query accumulates exact partial dot products over the postings of its rarer
/// buckets (those in at most <see cref="CommonShare"/> of the entries), keeps the <see cref="Candidates"/> best, and
/// re-ranks them with the full sparse dot product, so the score it returns is the exact cosine of the entry it returns.
/// Memory is about 8 bytes per non-zero bucket instead of 16 KB per dense vector.
/// </summary>
public sealed class SparseVectorIndex<T>(int dimensions) : IVectorIndex<T>
{
    /// <summary>Buckets present in more than this share of a partition's entries are skipped when gathering candidates.</summary>
    public const double CommonShare = 0.05;
    /// <summary>Candidates re-ranked exactly per query.</summary>
    public const int Candidates = 64;

    private sealed class Partition(int dimensions)
    {
        public readonly List<int>[] Postings = new List<int>[dimensions];
        public readonly List<float>[] Weights = new List<float>[dimensions];
        public readonly List<(int[] Index, float[] Value)> Vectors = [];
        public readonly List<T> Items = [];
        public readonly HashSet<int> Removed = [];
        public readonly ReaderWriterLockSlim Lock = new();
        /// <summary>Score buffers owned by this index: always handed back all-zero (only touched slots are written).</summary>
        public readonly System.Collections.Concurrent.ConcurrentBag<float[]> Buffers = [];
    }

    private readonly Dictionary<string, Partition> _partitions = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private int _count;
    private long _bytes;

    public int Count => Volatile.Read(ref _count);

    /// <summary>About how many bytes the index holds: each partition's bucket tables, each entry's sparse vector and postings.</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>At most how many bytes <see cref="Add"/> of <paramref name="vector"/> to <paramref name="partition"/> would add to <see cref="Bytes"/>.</summary>
    public long CostOf(string partition, ReadOnlySpan<float> vector)
    {
        bool known;
        lock (_lock) known = _partitions.ContainsKey(partition);
        var nonZero = 0;
        foreach (var v in vector)
            if (v != 0) nonZero++;
        return (known ? 0 : 2L * dimensions * IntPtr.Size + 2L * partition.Length + 512) + 64 + (16L + 112) * nonZero;
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
                Interlocked.Add(ref _bytes, 2L * dimensions * IntPtr.Size + 2L * partition.Length + 512);
            }
        }
        var (idx, val) = Sparse(vector);
        p.Lock.EnterWriteLock();
        try
        {
            var doc = p.Items.Count;
            p.Items.Add(item);
            p.Vectors.Add((idx, val));
            long bytes = 64 + 16L * idx.Length; // the entry's index and value arrays, its postings and weights
            for (var k = 0; k < idx.Length; k++)
            {
                if (p.Postings[idx[k]] is null) bytes += 112; // two new lists
                (p.Postings[idx[k]] ??= []).Add(doc);
                (p.Weights[idx[k]] ??= []).Add(val[k]);
            }
            Interlocked.Add(ref _bytes, bytes);
        }
        finally
        {
            p.Lock.ExitWriteLock();
        }
        Interlocked.Increment(ref _count);
    }

    public (T? Item, float Score) Nearest(string partition, ReadOnlySpan<float> query)
    {
        Partition? p;
        lock (_lock) _partitions.TryGetValue(partition, out p);
        if (p is null) return (default, float.NegativeInfinity);
        var (qi, qv) = Sparse(query);
        p.Lock.EnterReadLock();
        try
        {
            var n = p.Items.Count;
            if (n == 0) return (default, float.NegativeInfinity);
            // not ArrayPool: a shared pool may hand back an array another renter left dirty, and clearing 100k floats per query costs more than the search
            if (!p.Buffers.TryTake(out var acc) || acc.Length < n) acc = new float[Math.Max(n * 2, 1024)];
            var touched = ArrayPool<int>.Shared.Rent(n);
            var touchedCount = 0;
            try
            {
                var common = Math.Max(8, (int)(n * CommonShare));
                for (var k = 0; k < qi.Length; k++)
                {
                    var docs = p.Postings[qi[k]];
                    if (docs is null || (docs.Count > common && n > 64)) continue;
                    var weights = p.Weights[qi[k]];
                    var w = qv[k];
                    for (var j = 0; j < docs.Count; j++)
                    {
                        var d = docs[j];
                        if (acc[d] == 0) touched[touchedCount++] = d;
                        acc[d] += w * weights[j];
                    }
                }
                // the best partial scores become candidates; re-rank them with the exact sparse dot product
                var heap = new PriorityQueue<int, float>(Candidates + 1); // min-heap of the best partial scores
                for (var t = 0; t < touchedCount; t++)
                {
                    var d = touched[t];
                    var s = acc[d];
                    acc[d] = 0;
                    if (p.Removed.Contains(d)) continue;
                    if (heap.Count < Candidates) heap.Enqueue(d, s);
                    else if (heap.TryPeek(out _, out var lowest) && s > lowest) heap.DequeueEnqueue(d, s);
                }
                var bestDoc = -1;
                var bestScore = float.NegativeInfinity;
                while (heap.TryDequeue(out var doc, out _))
                {
                    var score = Dot(qi, qv, p.Vectors[doc]);
                    if (score > bestScore) { bestScore = score; bestDoc = doc; }
                }
                if (bestDoc < 0 && n <= 64)
                {
                    for (var d = 0; d < n; d++)
                    {
                        if (p.Removed.Contains(d)) continue;
                        var score = Dot(qi, qv, p.Vectors[d]);
                        if (score > bestScore) { bestScore = score; bestDoc = d; }
                    }
                }
                return bestDoc < 0 ? (default, bestScore) : (p.Items[bestDoc], bestScore);
            }
            finally
            {
                // every touched slot was reset while ranking, so the buffer goes back clean
                p.Buffers.Add(acc);
                ArrayPool<int>.Shared.Return(touched);
            }
        }
        finally
        {
            p.Lock.ExitReadLock();
        }
    }

    /// <summary>Removed entries become tombstones: their postings stay (charged) but they are never returned; <see cref="Count"/> drops.</summary>
    public bool Remove(string partition, T item)
    {
        Partition? p;
        lock (_lock) _partitions.TryGetValue(partition, out p);
        if (p is null) return false;
        p.Lock.EnterWriteLock();
        try
        {
            for (var i = 0; i < p.Items.Count; i++)
                if (!p.Removed.Contains(i) && ReferenceEquals(p.Items[i], item)) { Tombstone(p, i); return true; }
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
                for (var i = 0; i < p.Items.Count; i++)
                    if (!p.Removed.Contains(i) && stale(p.Items[i])) { Tombstone(p, i); removed++; }
            }
            finally
            {
                p.Lock.ExitWriteLock();
            }
        }
        return removed;
    }

    private void Tombstone(Partition p, int doc)
    {
        p.Removed.Add(doc);
        p.Items[doc] = default!;
        Interlocked.Decrement(ref _count);
    }

    private static float Dot(int[] qi, float[] qv, (int[] Index, float[] Value) v)
    {
        // both index arrays are sorted: merge
        float s = 0;
        int a = 0, b = 0;
        while (a < qi.Length && b < v.Index.Length)
        {
            if (qi[a] == v.Index[b]) { s += qv[a++] * v.Value[b++]; }
            else if (qi[a] < v.Index[b]) a++;
            else b++;
        }
        return s;
    }

    private static (int[] Index, float[] Value) Sparse(ReadOnlySpan<float> v)
    {
        var nz = 0;
        foreach (var x in v) if (x != 0) nz++;
        var idx = new int[nz];
        var val = new float[nz];
        var k = 0;
        for (var i = 0; i < v.Length; i++)
        {
            if (v[i] == 0) continue;
            idx[k] = i;
            val[k++] = v[i];
        }
        return (idx, val);
    }
}
