using Bursar.Core.Ledger;

namespace Bursar.Core.Tests;

/// <summary>Ledger ids: valid UUIDv7 text, time-ordered, never repeated, from many threads at once.</summary>
public sealed class CallIdTests
{
    [Fact]
    public void An_id_is_a_version_7_uuid_of_its_millisecond_in_guid_N_form()
    {
        var now = DateTimeOffset.FromUnixTimeMilliseconds(1_764_633_600_123);
        var id = CallIds.New(now);
        Assert.Matches("^[0-9a-f]{32}$", id);
        var guid = Guid.ParseExact(id, "N");
        Assert.Equal(7, guid.Version);
        Assert.Equal(0b10, guid.Variant >> 2); // RFC 9562 variant 10xx
        Assert.Equal(now.ToUnixTimeMilliseconds(), Convert.ToInt64(id[..12], 16));
        Assert.Equal(guid.ToString("N"), id);
    }

    [Fact]
    public void Ids_of_one_thread_are_unique_and_ordered_even_many_in_one_millisecond()
    {
        var now = DateTimeOffset.FromUnixTimeMilliseconds(1_764_633_600_000);
        var ids = Enumerable.Range(0, 20_000).Select(_ => CallIds.New(now)).ToList(); // far more than the 12 counter bits hold in one millisecond
        Assert.Equal(ids.Count, ids.Distinct().Count());
        Assert.Equal(ids.OrderBy(x => x, StringComparer.Ordinal), ids);
        var later = CallIds.New(now.AddSeconds(1));
        Assert.True(string.CompareOrdinal(later, ids[^1]) > 0);
    }

    [Fact]
    public void Ids_made_on_many_threads_at_once_never_repeat()
    {
        var now = DateTimeOffset.FromUnixTimeMilliseconds(1_764_633_600_000);
        var all = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, _ =>
        {
            for (var i = 0; i < 5_000; i++) all.Add(CallIds.New(now));
        });
        Assert.Equal(40_000, all.Distinct().Count());
    }
}
