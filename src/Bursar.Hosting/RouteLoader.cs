using Bursar.Core.Routing;
using Bursar.Core.Pipeline;
using Microsoft.Extensions.Logging;

namespace Bursar.Hosting;

/// <summary>Validates stored routes against the deployments and installs them in the <see cref="RouteTable"/>; a stored route that no longer validates is skipped and logged.</summary>
public sealed partial class RouteLoader(IRouteStore store, RouteTable table, IServedModels served, ILogger<RouteLoader> logger)
{
    /// <summary>Throws <see cref="InvalidOperationException"/> naming the field when the route cannot be served.</summary>
    public void Validate(RoutePolicy policy) => policy.Validate($"route '{policy.Name}'", served.Serves);

    public async Task ReloadAsync(CancellationToken ct)
    {
        var stored = await store.ListRoutesAsync(ct).ConfigureAwait(false);
        var valid = new List<StoredRoute>();
        foreach (var r in stored)
        {
            try
            {
                Validate(r.Policy);
                valid.Add(r);
            }
            catch (InvalidOperationException e)
            {
                LogInvalid(logger, r.Name, e.Message);
            }
        }
        table.Install(valid);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stored route {Route} is skipped: {Reason}")]
    private static partial void LogInvalid(ILogger logger, string route, string reason);
}
