using Bursar.Core.Pipeline;
using Bursar.Core.Routing;

namespace Bursar.Core.Attribution;

/// <summary>
/// The first stage: who is calling (the key's own tags, then the <c>x-bursar-*</c> tags the key may set; a customer
/// only if the key lists it) and which route policy applies to the call (the first match of the current route table).
/// Refuses a malformed tag (400 naming the header) or one the key may not set (403).
/// </summary>
public sealed class AttributionStage(RouteTable routes) : ILeverStage
{
    /// <summary>The last attribution made (shared by the next call that resolves to the same one: they never change).</summary>
    private CallAttribution? _last;

    public string Name => "attribution";

    public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        call.Attribution = _last = AttributionResolver.Resolve(call.Key, call.Tags, _last, out var error);
        if (error is not null)
        {
            call.Refuse(error.Malformed ? LeverRefusal.BadRequest(error.Message, error.Header) : LeverRefusal.Forbidden(error.Message));
            return ValueTask.CompletedTask;
        }
        // one snapshot per call: the admin API may swap the table meanwhile
        var table = call.Routes = routes.Current;
        call.Policy = table.Match(call.Attribution, call.Request.Model, call.Request.EstimatedInputTokens);
        if (call.Policy is not null) call.Route = call.Policy.Name;
        call.Model = call.Request.Model;
        return next(call, cancellationToken);
    }
}

public static class AttributionStageExtensions
{
    /// <summary>Tags from the key and the caller, checked against the key's policy; the matching route policy.</summary>
    public static LeverPipelineBuilder UseAttribution(this LeverPipelineBuilder builder) => builder.Use<AttributionStage>();
}
