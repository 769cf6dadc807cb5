namespace Bursar.Core.Caching.Semantic;

/// <summary>
/// Semantic-cache entries shared by the gateway instances on one Redis cache (<c>Bursar:ResponseCache:Redis</c>): an
/// entry one instance stores is kept there (its question, partition and answer, expiring with the semantic TTL) and
/// announced, and every instance adds it to its own vector index (embedding the question with its own encoder). An
/// instance that starts loads the entries stored so far, then follows the announcements. A store that cannot be
/// reached costs only sharing (each instance still caches what it answers), never a call.
/// </summary>
public interface ISharedSemanticEntries
{
    /// <summary>Stores an entry this instance added, for the others, and announces it.</summary>
    ValueTask PublishAsync(string partition, string question, CachedResponse response, TimeSpan ttl);

    /// <summary>Hands every stored entry, then every entry another instance announces, to <paramref name="onEntry"/>, until <paramref name="cancellationToken"/> ends it.</summary>
    Task FollowAsync(Func<string, string, CachedResponse, Task> onEntry, CancellationToken cancellationToken);
}
