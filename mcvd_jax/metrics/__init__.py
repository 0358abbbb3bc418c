"""Video metrics: FVD, LPIPS, SSIM, PSNR."""
