using Bursar.Core.Metering;
using Bursar.Core.Pipeline;

namespace Bursar.Core.Caching.Semantic;

/// <summary>
/// The semantic response cache, for the features that opt in (<see cref="SemanticCacheOptions"/>, or a route's
/// <c>SemanticCache</c>): a similar single-turn question of the same tenant, model and system prompt, past the guards,
/// is answered with the stored answer at $0. An unreadable body or an embeddings endpoint that is down means no
/// semantic cache for that call, never a failed call; so does an encoder whose model did not load. With
/// <see cref="ISharedSemanticEntries"/> an entry stored here is also stored for the other instances and announced.
/// </summary>
public sealed class SemanticCacheStage(SemanticResponseCache semantic, CallMeter meter, TimeProvider time, ISharedSemanticEntries? shared = null) : ILeverStage
{
    public string Name => "semantic-cache";

    public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        call.CacheStatus ??= "bypass";
        // not opted in: straight on, without an async frame of its own
        return (call.Policy?.SemanticCache ?? semantic.Options.AppliesTo(call.Attribution.Feature)) && call.Request.CacheControl != "off"
            ? LookupAsync(call, next, cancellationToken)
            : next(call, cancellationToken);
    }

    private async ValueTask LookupAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        var req = call.Request;
        string? partition = null, question = null;
        float[]? vector = null;
        {
            try
            {
                if (req.TryBody(out var body) && SemanticResponseCache.Question(body, semantic.Options.MaxUserTurns) is { } q)
                {
                    partition = SemanticResponseCache.Partition(ResponseCacheKey.Tenant(call.Key, call.Attribution), req.Model, q.SystemHash, call.Dialect, req.Stream);
                    var (similar, score, rejected, embedded) = await semantic.LookupWithVectorAsync(partition, q.Question, cancellationToken).ConfigureAwait(false);
                    if (similar is not null)
                    {
                        ExactCacheStage.Hit(call, similar.Response, semantic: true);
                        call.Similarity = score;
                        return;
                    }
                    // the encoder's model did not load: no semantic cache (the reason was logged once), the call goes on as a bypass
                    if (rejected != "disabled") (question, vector) = (q.Question, embedded); // no vector: too long to embed or store
                }
            }
            catch (Exception e) when (CallRequest.IsBadJson(e) || e is HttpRequestException)
            {
                partition = question = null;
            }
        }
        if (question is null)
        {
            await next(call, cancellationToken).ConfigureAwait(false);
            return;
        }
        call.CacheStatus = "miss";
        call.CaptureAnswer = true;
        await next(call, cancellationToken).ConfigureAwait(false);
        // the answer goes in under the lookup's vector: the question is not embedded again, so the miss waits for an index
        // insertion (microseconds), never for a second encoder run; other instances hear of it through the shared entries
        if (vector is not null && call.Answer is { } answer && call.Outcome == "ok" && !cancellationToken.IsCancellationRequested)
        {
            var stored = ExactCacheStage.Stored(call, answer, meter, time);
            if (semantic.Add(partition!, question, vector, stored) && shared is not null)
                await shared.PublishAsync(partition!, question, stored, semantic.Options.Ttl).ConfigureAwait(false);
        }
    }
}

public static class SemanticCacheStageExtensions
{
    /// <summary>Similar questions answered from the semantic cache, for the features that opt in (options: <see cref="SemanticCacheOptions"/>).</summary>
    public static LeverPipelineBuilder UseSemanticCache(this LeverPipelineBuilder builder) => builder.Use<SemanticCacheStage>();
}
