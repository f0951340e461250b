using System.Net;
using System.Net.Sockets;

namespace Segmentation.Distributed;

/// <summary>
/// The start-up meeting of processes that no MPI job joins (torchrun's variables): rank 0 listens at
/// MASTER_ADDR:MASTER_PORT, every other rank connects and says its rank, and rank 0 hands each the same bytes (NCCL's
/// unique id). It carries nothing else: the collectives run on NCCL.
/// </summary>
internal static class TcpRendezvous
{
    public static byte[] Share(byte[] payload, int rank, int worldSize, string address, int port, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        return rank == 0 ? Serve(payload, worldSize, port, deadline, timeout)
            : Join(payload.Length, rank, address, port, deadline, timeout);
    }

    private static byte[] Serve(byte[] payload, int worldSize, int port, DateTime deadline, TimeSpan timeout)
    {
        var listener = new TcpListener(IPAddress.Any, port);
        try { listener.Start(worldSize); }
        catch (SocketException e)
        {
            throw new DistributedException($"Rank 0 cannot listen on port {port} (MASTER_PORT): {e.Message}.", e);
        }
        try
        {
            var seen = new HashSet<int>();
            while (seen.Count < worldSize - 1)
            {
                var accept = listener.AcceptTcpClientAsync();
                if (!accept.Wait(Remaining(deadline)))
                    throw new DistributedException($"Rank 0 waited {timeout.TotalSeconds:0} s at port {port} for "
                        + $"{worldSize - 1 - seen.Count} more process(es) (ranks not seen: "
                        + $"{string.Join(", ", Enumerable.Range(1, worldSize - 1).Where(r => !seen.Contains(r)))}).");
                using var client = accept.Result;
                var stream = client.GetStream();
                var rankBytes = new byte[4];
                stream.ReadExactly(rankBytes);
                seen.Add(BitConverter.ToInt32(rankBytes));
                stream.Write(payload);
            }
            return payload;
        }
        finally { listener.Stop(); }
    }

    private static byte[] Join(int length, int rank, string address, int port, DateTime deadline, TimeSpan timeout)
    {
        while (true)
        {
            try
            {
                using var client = new TcpClient();
                if (!client.ConnectAsync(address, port).Wait(Remaining(deadline))) throw new TimeoutException();
                var stream = client.GetStream();
                stream.Write(BitConverter.GetBytes(rank));
                var payload = new byte[length];
                stream.ReadExactly(payload);
                return payload;
            }
            catch (Exception e) when (e is SocketException or AggregateException or IOException or TimeoutException)
            {
                if (DateTime.UtcNow >= deadline)
                    throw new DistributedException($"Rank {rank} could not reach rank 0 at {address}:{port} "
                        + $"(MASTER_ADDR, MASTER_PORT) within {timeout.TotalSeconds:0} s: {e.Message}", e);
                Thread.Sleep(200);
            }
        }
    }

    private static TimeSpan Remaining(DateTime deadline)
    {
        var left = deadline - DateTime.UtcNow;
        return left > TimeSpan.Zero ? left : TimeSpan.Zero;
    }
}
