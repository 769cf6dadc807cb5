namespace Bursar.Extensions.AI;

/// <summary>
/// Ambient attribution for the calls made inside it, on this async flow:
/// <c>using var _ = BursarScope.Begin(feature: "search", customer: "acme", run: runId);</c>.
/// Inner scopes override outer ones tag by tag; <c>ChatOptions.AdditionalProperties["bursar.feature"]</c> (and the other
/// <c>bursar.*</c> keys) override the scope for one call.
/// </summary>
public static class BursarScope
{
    private static readonly AsyncLocal<Frame?> Current = new();

    private sealed record Frame(Frame? Outer, string? Feature, string? Customer, string? Team, string? Task, string? Template, string? Run);

    /// <summary>Starts a scope; dispose it to end it (the outer scope applies again).</summary>
    public static IDisposable Begin(string? feature = null, string? customer = null, string? team = null, string? task = null, string? template = null, string? run = null)
    {
        var frame = new Frame(Current.Value, feature, customer, team, task, template, run);
        Current.Value = frame;
        return new Ending(frame);
    }

    /// <summary>The innermost value of a tag (<c>feature</c>, <c>customer</c>, <c>team</c>, <c>task</c>, <c>template</c>, <c>run</c>) on this flow, or null.</summary>
    public static string? Tag(string tag)
    {
        for (var f = Current.Value; f is not null; f = f.Outer)
        {
            var v = tag switch
            {
                "feature" => f.Feature, "customer" => f.Customer, "team" => f.Team, "task" => f.Task, "template" => f.Template, "run" => f.Run,
                _ => null,
            };
            if (v is not null) return v;
        }
        return null;
    }

    private sealed class Ending(Frame frame) : IDisposable
    {
        private bool _done;

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            if (ReferenceEquals(Current.Value, frame)) Current.Value = frame.Outer;
        }
    }
}
